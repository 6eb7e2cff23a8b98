-- Decided client transactions, for exactly-once replays (docs/contract.md section 4, "Replays are harmless").
-- identity = (user_id, client_id, first_op_id, last_op_id, digest), compared exactly (binary collation);
-- result = the result JSON answered. seq gives commit order. Internal: never synced. Rows older than
-- ledger_days are deleted by the upload function itself (at most once an hour per container).
CREATE TABLE IF NOT EXISTS powersync_upload_ledger (
  seq bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  client_id varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  first_op_id bigint NOT NULL,
  last_op_id bigint NOT NULL,
  digest char(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  result mediumtext NOT NULL,
  decided_at datetime(3) NOT NULL,
  UNIQUE KEY uq_powersync_upload_ledger_identity (digest, user_id, client_id, first_op_id, last_op_id),
  KEY ix_powersync_upload_ledger_decided (decided_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
