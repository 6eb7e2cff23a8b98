-- Rejected uploads, one row per fatal_error result (docs/contract.md section 4, "The errors table").
-- To sync it back to devices, enable CDC on it like the other synced tables:
--   EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'powersync_upload_errors', @role_name = NULL;
IF OBJECT_ID(N'dbo.powersync_upload_errors', N'U') IS NULL
BEGIN
  CREATE TABLE dbo.powersync_upload_errors (
    id varchar(36) NOT NULL PRIMARY KEY,   -- UUID text, as PowerSync requires for synced tables
    user_id nvarchar(255) NOT NULL,
    client_id nvarchar(255) NULL,
    transaction_id bigint NULL,
    op_index int NOT NULL,
    op_id bigint NULL,
    table_name nvarchar(128) NOT NULL,
    row_id nvarchar(255) NOT NULL,
    error_code varchar(40) NOT NULL,
    message nvarchar(1000) NOT NULL,
    created_at datetime2(3) NOT NULL
  );
  CREATE INDEX ix_powersync_upload_errors_user ON dbo.powersync_upload_errors(user_id, created_at);
END
