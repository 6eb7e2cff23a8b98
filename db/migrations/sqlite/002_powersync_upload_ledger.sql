-- Decided client transactions, for exactly-once replays (docs/contract.md section 4, "Replays are harmless").
-- identity = (user_id, client_id, first_op_id, last_op_id, digest); result = the result JSON answered.
-- seq gives commit order. Internal: never synced. Rows older than ledger_days are deleted by the
-- upload function itself (at most once an hour per process).
CREATE TABLE IF NOT EXISTS powersync_upload_ledger (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  first_op_id BIGINT NOT NULL,
  last_op_id BIGINT NOT NULL,
  digest CHAR(64) NOT NULL,
  result TEXT NOT NULL,
  decided_at DATETIME NOT NULL,
  CONSTRAINT uq_powersync_upload_ledger_identity UNIQUE (digest, user_id, client_id, first_op_id, last_op_id)
);
CREATE INDEX IF NOT EXISTS ix_powersync_upload_ledger_decided ON powersync_upload_ledger(decided_at);
