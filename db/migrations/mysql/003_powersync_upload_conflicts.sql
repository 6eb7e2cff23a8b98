-- Conflicts and refused rules, one row each (docs/contract.md section 4, "Conflicts"); synced to the user.
CREATE TABLE IF NOT EXISTS powersync_upload_conflicts (
  id varchar(36) NOT NULL PRIMARY KEY,
  user_id varchar(255) NOT NULL,
  client_id varchar(255) NULL,
  transaction_id bigint NULL,
  op_id bigint NULL,
  table_name varchar(128) NOT NULL,        -- client table name
  row_id varchar(255) NOT NULL,            -- client row id
  reason varchar(20) NOT NULL,             -- stale | version | frozen | transition
  client_values mediumtext NULL,           -- JSON of the client's values of the columns involved
  server_values mediumtext NULL,           -- JSON of the server's values (allowed columns only)
  created_at datetime(3) NOT NULL,
  resolved smallint NOT NULL DEFAULT 0,
  CONSTRAINT ck_powersync_upload_conflicts_resolved CHECK (resolved IN (0, 1)),
  KEY ix_powersync_upload_conflicts_user (user_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
