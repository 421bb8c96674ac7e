-- The task table: one row per accepted task. Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE tasks (
  seq             INTEGER PRIMARY KEY,            -- insertion order: the age within a priority
  task_id         TEXT    NOT NULL UNIQUE,
  type            TEXT    NOT NULL,               -- the pool that runs it
  payload         TEXT    NOT NULL,               -- JSON object forwarded to the backend
  priority        INTEGER NOT NULL DEFAULT 5,
  status          TEXT    NOT NULL DEFAULT 'QUEUED',
  attempt         INTEGER NOT NULL DEFAULT 0,
  max_attempts    INTEGER NOT NULL DEFAULT 3,
  timeout_s       INTEGER,
  idempotency_key TEXT,
  webhook_url     TEXT,
  created_at      INTEGER NOT NULL,
  started_at      INTEGER,
  finished_at     INTEGER,
  next_attempt_at INTEGER,                        -- a retry waits until then
  backend         TEXT,                           -- the backend of the latest attempt
  error           TEXT,
  result_size     INTEGER,
  result_type     TEXT,
  input_name      TEXT,                           -- uploaded file, under <data-dir>/inputs/
  input_type      TEXT,
  input_size      INTEGER
);

-- The feeder reads the backlog of a pool in priority-then-age order from here.
CREATE INDEX tasks_ready ON tasks (type, priority DESC, seq) WHERE status = 'QUEUED';
-- Lists filtered by status, newest first.
CREATE INDEX tasks_by_status ON tasks (status, seq);
-- A repeated idempotency key finds the first task; NULL keys take no index space.
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
