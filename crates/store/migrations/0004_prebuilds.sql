-- Prebuilds: a workspace's setup captured once (disk, and memory where the driver can),
-- cloned by every sandbox started from it.
CREATE TABLE prebuilds (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    state         TEXT NOT NULL,
    driver        TEXT NOT NULL,
    -- The builder sandbox (or the promoted one).
    sandbox_id    TEXT,
    origin        TEXT NOT NULL,
    -- Driver snapshot description (JSON), once captured.
    snapshot      TEXT,
    -- The captured agent's token, sealed: clones answer to it until they get their own.
    agent_token   BLOB,
    commits       TEXT NOT NULL,
    config_hash   TEXT NOT NULL,
    image_hash    TEXT NOT NULL,
    vcpus         INTEGER NOT NULL,
    memory_mib    INTEGER NOT NULL,
    stale         TEXT,
    error         TEXT,
    log_tail      TEXT,
    created_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX prebuilds_by_workspace ON prebuilds(workspace_id, created_at);

ALTER TABLE sandboxes ADD COLUMN prebuild_id TEXT;
CREATE INDEX sandboxes_by_prebuild ON sandboxes(prebuild_id);
