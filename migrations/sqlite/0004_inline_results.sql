-- Small results live in the database, written in the same transaction as the DONE that makes
-- them visible; a DONE task without a row here has its result in results/<task_id> (large
-- answers, and every result written before this migration).
CREATE TABLE results (
  task_seq INTEGER PRIMARY KEY,
  content  BLOB    NOT NULL
);
