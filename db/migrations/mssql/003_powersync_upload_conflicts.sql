-- Conflicts and refused rules, one row each (docs/contract.md section 4, "Conflicts"); synced to the user.
-- To sync it back to devices, enable CDC on it like the other synced tables:
--   EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'powersync_upload_conflicts', @role_name = NULL;
IF OBJECT_ID(N'dbo.powersync_upload_conflicts', N'U') IS NULL
BEGIN
  CREATE TABLE dbo.powersync_upload_conflicts (
    id varchar(36) NOT NULL PRIMARY KEY,   -- UUID text, as PowerSync requires for synced tables
    user_id nvarchar(255) NOT NULL,
    client_id nvarchar(255) NULL,
    transaction_id bigint NULL,
    op_id bigint NULL,
    table_name nvarchar(128) NOT NULL,     -- client table name
    row_id nvarchar(255) NOT NULL,         -- client row id
    reason varchar(20) NOT NULL,           -- stale | version | frozen | transition
    client_values nvarchar(max) NULL,      -- JSON of the client's values of the columns involved
    server_values nvarchar(max) NULL,      -- JSON of the server's values (allowed columns only)
    created_at datetime2(3) NOT NULL,
    resolved tinyint NOT NULL CONSTRAINT df_powersync_upload_conflicts_resolved DEFAULT 0
      CONSTRAINT ck_powersync_upload_conflicts_resolved CHECK (resolved IN (0, 1))
  );
  CREATE INDEX ix_powersync_upload_conflicts_user ON dbo.powersync_upload_conflicts(user_id, created_at);
END
