-- --retain-final: final tasks by the time they finished, so the oldest are found first without
-- a scan. Queued and running tasks take no space in it.
CREATE INDEX tasks_final_age ON tasks (finished_at) WHERE status IN ('DONE', 'FAILED', 'CANCELED');
