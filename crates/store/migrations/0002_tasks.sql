CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    title        TEXT NOT NULL,
    prompt       TEXT NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    template     TEXT NOT NULL,
    effort       TEXT NOT NULL,
    base_branch  TEXT NOT NULL,
    repo         TEXT NOT NULL,
    branch       TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    sandbox_id   TEXT,
    -- Live progress, folded from the agent's events: todos, files, usage, changes (JSON).
    progress     TEXT NOT NULL DEFAULT '{}',
    summary      TEXT,
    error        TEXT,
    diff         TEXT,
    -- Where the agent event stream resumes after a restart.
    cursor       TEXT,
    session_id   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX tasks_by_status ON tasks(status);

-- Every normalized agent event of a task, in arrival order.
CREATE TABLE task_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    at      TEXT NOT NULL,
    event   TEXT NOT NULL
);
CREATE INDEX task_events_by_task ON task_events(task_id, id);

-- Questions and permission requests waiting for a human.
CREATE TABLE interactions (
    id          TEXT NOT NULL,
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    detail      TEXT NOT NULL,
    asked_at    TEXT NOT NULL,
    resolved_at TEXT,
    outcome     TEXT,
    PRIMARY KEY (task_id, id)
);
CREATE INDEX interactions_pending ON interactions(resolved_at);
