-- Conflicts and refused rules, one row each (docs/contract.md section 4, "Conflicts"); synced to the user by a
-- sync rule (SELECT * FROM powersync_upload_conflicts WHERE user_id = request.user_id()). The app marks
-- one resolved with a PATCH of `resolved` on its own row. Values are JSON text of the columns involved.
CREATE TABLE IF NOT EXISTS powersync_upload_conflicts (
  id varchar(36) NOT NULL PRIMARY KEY,     -- UUID text, as PowerSync requires for synced tables
  user_id varchar(255) NOT NULL,
  client_id varchar(255) NULL,
  transaction_id bigint NULL,
  op_id bigint NULL,
  table_name varchar(128) NOT NULL,        -- client table name
  row_id text NOT NULL,                    -- client row id
  reason varchar(20) NOT NULL,             -- stale | version | frozen | transition
  client_values text NULL,                 -- JSON: what the client sent for the columns involved
  server_values text NULL,                 -- JSON: the server's values of those columns (allowed columns only)
  created_at timestamp(3) NOT NULL,        -- UTC
  resolved smallint NOT NULL DEFAULT 0 CHECK (resolved IN (0, 1))
);
CREATE INDEX IF NOT EXISTS ix_powersync_upload_conflicts_user ON powersync_upload_conflicts(user_id, created_at);
