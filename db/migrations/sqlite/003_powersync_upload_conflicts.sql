-- Conflicts and refused rules, one row each (docs/contract.md section 4, "Conflicts"); synced to the user.
CREATE TABLE IF NOT EXISTS powersync_upload_conflicts (
  id TEXT NOT NULL PRIMARY KEY,            -- UUID text, as PowerSync requires for synced tables
  user_id TEXT NOT NULL,
  client_id TEXT NULL,
  transaction_id BIGINT NULL,
  op_id BIGINT NULL,
  table_name VARCHAR(128) NOT NULL,        -- client table name
  row_id TEXT NOT NULL,                    -- client row id
  reason VARCHAR(20) NOT NULL,             -- stale | version | frozen | transition
  client_values TEXT NULL,                 -- JSON of the client's values of the columns involved
  server_values TEXT NULL,                 -- JSON of the server's values (allowed columns only)
  created_at DATETIME NOT NULL,
  resolved INTEGER NOT NULL DEFAULT 0 CHECK (resolved IN (0, 1))
);
CREATE INDEX IF NOT EXISTS ix_powersync_upload_conflicts_user ON powersync_upload_conflicts(user_id, created_at);
