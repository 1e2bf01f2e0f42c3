-- Overrides of session templates: scope is 'global' or a workspace id.
CREATE TABLE session_templates (
    scope      TEXT NOT NULL,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (scope, name)
);
ALTER TABLE tasks ADD COLUMN parent_id TEXT;
