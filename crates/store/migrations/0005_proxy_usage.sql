-- What each task spent through the model proxy, added to by one UPDATE per call (never
-- folded into `progress`, which the agent's event stream rewrites).
ALTER TABLE tasks ADD COLUMN proxy_requests      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN proxy_input_tokens  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN proxy_output_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN proxy_cost_usd      REAL    NOT NULL DEFAULT 0;
