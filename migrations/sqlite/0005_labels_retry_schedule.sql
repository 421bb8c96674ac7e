-- Labels: up to 16 string pairs per task. A label filter walks (key, value, task_seq) newest
-- first, so it pages by seq like every other list.
CREATE TABLE task_labels (
  task_seq INTEGER NOT NULL,
  key      TEXT    NOT NULL,
  value    TEXT    NOT NULL,
  PRIMARY KEY (task_seq, key)
) WITHOUT ROWID;
CREATE INDEX task_labels_by_value ON task_labels (key, value, task_seq);

-- Retry: attempts spent before the latest retry (the budget counts from there) and how many
-- retries there were. Attempt numbers keep growing, so the old attempts stay listed.
ALTER TABLE tasks ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;

-- Scheduled tasks are QUEUED with scheduled = 1 until run_at: outside the backlog (no queue
-- position, no dispatch, not in --max-queued) until the scheduler lets them in.
ALTER TABLE tasks ADD COLUMN run_at INTEGER;
ALTER TABLE tasks ADD COLUMN scheduled INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_scheduled ON tasks (run_at) WHERE scheduled = 1;
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (type, priority DESC, seq) WHERE status = 'QUEUED' AND scheduled = 0;
