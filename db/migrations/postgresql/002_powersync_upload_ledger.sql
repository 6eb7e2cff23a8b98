-- Decided client transactions, for exactly-once replays (docs/contract.md section 4, "Replays are harmless").
-- One row per transaction of a request that named client_id and gave every operation an op_id:
-- identity = (user_id, client_id, first_op_id, last_op_id, digest); result = the result JSON answered
-- (a replay within ledger_days gets it again). seq gives commit order. Internal: never synced.
-- Rows older than ledger_days are deleted by the upload function itself (at most once an hour per
-- container); a scheduled job may also run: DELETE FROM powersync_upload_ledger WHERE decided_at < now() - interval '7 days';
CREATE TABLE IF NOT EXISTS powersync_upload_ledger (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id varchar(255) NOT NULL,           -- JWT sub
  client_id varchar(255) NOT NULL,         -- the SDK's getClientId()
  first_op_id bigint NOT NULL,
  last_op_id bigint NOT NULL,
  digest char(64) NOT NULL,                -- SHA-256 (hex) of the transaction's canonical JSON
  result text NOT NULL,                    -- the result JSON answered for it (names and codes, no values)
  decided_at timestamp(3) NOT NULL,        -- UTC
  CONSTRAINT uq_powersync_upload_ledger_identity UNIQUE (digest, user_id, client_id, first_op_id, last_op_id)
);
CREATE INDEX IF NOT EXISTS ix_powersync_upload_ledger_decided ON powersync_upload_ledger(decided_at);
