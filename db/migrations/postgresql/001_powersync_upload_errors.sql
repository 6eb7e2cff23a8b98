-- Rejected uploads, one row per fatal_error result (docs/contract.md section 4, "The errors table").
CREATE TABLE IF NOT EXISTS powersync_upload_errors (
  id varchar(36) NOT NULL PRIMARY KEY,     -- UUID text, as PowerSync requires for synced tables
  user_id text NOT NULL,                   -- JWT sub of the uploader
  client_id text NULL,
  transaction_id bigint NULL,
  op_index integer NOT NULL,
  op_id bigint NULL,
  table_name varchar(128) NOT NULL,
  row_id text NOT NULL,
  error_code varchar(40) NOT NULL,
  message text NOT NULL,
  created_at timestamp(3) NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_powersync_upload_errors_user ON powersync_upload_errors(user_id, created_at);
