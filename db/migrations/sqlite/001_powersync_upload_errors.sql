-- Rejected uploads, one row per fatal_error result (docs/contract.md section 4, "The errors table").
CREATE TABLE IF NOT EXISTS powersync_upload_errors (
  id TEXT NOT NULL PRIMARY KEY,            -- UUID text, as PowerSync requires for synced tables
  user_id TEXT NOT NULL,                   -- JWT sub of the uploader
  client_id TEXT NULL,
  transaction_id BIGINT NULL,              -- client tx_id / transaction_id when sent
  op_index INTEGER NOT NULL,               -- index of the failing operation in its transaction
  op_id BIGINT NULL,
  table_name VARCHAR(128) NOT NULL,        -- client table name
  row_id TEXT NOT NULL,                    -- client row id
  error_code VARCHAR(40) NOT NULL,
  message TEXT NOT NULL,                   -- built from the code and names; never a submitted value
  created_at DATETIME NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_powersync_upload_errors_user ON powersync_upload_errors(user_id, created_at);
