-- Decided client transactions, for exactly-once replays (docs/contract.md section 4, "Replays are harmless").
-- identity = (user_id, client_id, first_op_id, last_op_id, digest), compared exactly (binary collation);
-- result = the result JSON answered. seq gives commit order. Internal: never synced (no CDC).
-- Rows older than ledger_days are deleted by the upload function itself (at most once an hour per container).
IF OBJECT_ID(N'dbo.powersync_upload_ledger', N'U') IS NULL
BEGIN
  CREATE TABLE dbo.powersync_upload_ledger (
    seq bigint IDENTITY(1, 1) NOT NULL PRIMARY KEY,
    user_id nvarchar(255) COLLATE Latin1_General_100_BIN2 NOT NULL,
    client_id nvarchar(255) COLLATE Latin1_General_100_BIN2 NOT NULL,
    first_op_id bigint NOT NULL,
    last_op_id bigint NOT NULL,
    digest nchar(64) COLLATE Latin1_General_100_BIN2 NOT NULL,  -- nchar: pymssql sends N'...', the seek needs no conversion
    result nvarchar(max) NOT NULL,
    decided_at datetime2(3) NOT NULL,
    CONSTRAINT uq_powersync_upload_ledger_identity UNIQUE (digest, user_id, client_id, first_op_id, last_op_id)
  );
  CREATE INDEX ix_powersync_upload_ledger_decided ON dbo.powersync_upload_ledger(decided_at);
END
