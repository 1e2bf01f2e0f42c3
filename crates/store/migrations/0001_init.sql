-- Workspaces: the spec is stored as JSON without its secrets, which live sealed below.
CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    spec       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE workspace_secrets (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('env', 'file')),
    name         TEXT NOT NULL,
    mode         INTEGER NOT NULL,
    preview      TEXT NOT NULL,
    sealed       BLOB NOT NULL,
    PRIMARY KEY (workspace_id, kind, name)
);

CREATE TABLE sandboxes (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    workspace_id TEXT REFERENCES workspaces(id) ON DELETE SET NULL,
    state        TEXT NOT NULL,
    error        TEXT,
    driver       TEXT NOT NULL,
    vcpus        INTEGER NOT NULL,
    memory_mib   INTEGER NOT NULL,
    disk_mib     INTEGER NOT NULL,
    image        TEXT NOT NULL,
    -- Driver-specific handle (process id and start time, agent address…), JSON.
    runtime      TEXT,
    agent_token  BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX sandboxes_by_state ON sandboxes(state);
CREATE INDEX sandboxes_by_workspace ON sandboxes(workspace_id);

-- Every host resource is recorded before it is created, so a crash never leaks one.
CREATE TABLE host_resources (
    sandbox_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    ident      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, kind, ident)
);

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource_id  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    type       TEXT NOT NULL,
    sandbox_id TEXT,
    payload    TEXT NOT NULL
);
