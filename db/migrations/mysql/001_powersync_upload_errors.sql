-- Rejected uploads, one row per fatal_error result (docs/contract.md section 4, "The errors table").
CREATE TABLE IF NOT EXISTS powersync_upload_errors (
  id varchar(36) NOT NULL PRIMARY KEY,
  user_id varchar(255) NOT NULL,
  client_id varchar(255) NULL,
  transaction_id bigint NULL,
  op_index int NOT NULL,
  op_id bigint NULL,
  table_name varchar(128) NOT NULL,
  row_id varchar(255) NOT NULL,
  error_code varchar(40) NOT NULL,
  message varchar(1000) NOT NULL,
  created_at datetime(3) NOT NULL,
  KEY ix_powersync_upload_errors_user (user_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
