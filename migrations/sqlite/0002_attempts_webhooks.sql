-- Every attempt to run a task on a backend, shown in GET /api/v1/tasks/{id}.
CREATE TABLE attempts (
  task_seq    INTEGER NOT NULL,
  number      INTEGER NOT NULL,
  backend     TEXT    NOT NULL,
  outcome     TEXT    NOT NULL,
  error       TEXT,
  started_at  INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  PRIMARY KEY (task_seq, number, started_at)
) WITHOUT ROWID;

-- Webhook delivery: the final task JSON is POSTed to webhook_url, retried with backoff.
ALTER TABLE tasks ADD COLUMN webhook_state TEXT;      -- pending | delivered | failed
ALTER TABLE tasks ADD COLUMN webhook_next_at INTEGER;  -- when the next delivery attempt is due
CREATE INDEX tasks_webhook_due ON tasks (webhook_next_at) WHERE webhook_state = 'pending';

CREATE TABLE webhook_deliveries (
  task_seq    INTEGER NOT NULL,
  number      INTEGER NOT NULL,
  at          INTEGER NOT NULL,
  status_code INTEGER NOT NULL,
  error       TEXT,
  PRIMARY KEY (task_seq, number)
) WITHOUT ROWID;

-- Lists filtered by type, newest first.
CREATE INDEX tasks_by_type ON tasks (type, seq);

-- Retries waiting for their backoff: the feeder asks when the next one is due.
CREATE INDEX tasks_delayed ON tasks (type, next_attempt_at)
  WHERE status = 'QUEUED' AND next_attempt_at IS NOT NULL;
