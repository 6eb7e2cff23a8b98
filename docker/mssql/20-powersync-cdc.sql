-- What PowerSync's SQL Server source needs in the replicated database (run in powersync by init.sh,
-- as sa, after the tables exist; safe to run again). CDC needs SQL Server Agent (MSSQL_AGENT_ENABLED)
-- and an edition with CDC (Developer here); PowerSync's checks ask for SQL Server 2022 (16.x) or newer.
-- The checkpoint table is the one PowerSync's SQL Server module creates itself when it may
-- (powersync-service modules/module-mssql: src/utils/mssql.ts and its dev/ and ci/ init scripts);
-- PowerSync updates it to make regular checkpoints appear in CDC.
-- A dedicated PowerSync login (instead of sa) also needs: db_datareader and cdc_reader in this
-- database, INSERT and UPDATE on dbo._powersync_checkpoints, VIEW DATABASE PERFORMANCE STATE here and
-- VIEW SERVER PERFORMANCE STATE in master.
SET NOCOUNT ON;
IF (SELECT is_cdc_enabled FROM sys.databases WHERE database_id = DB_ID()) = 0
  EXEC sys.sp_cdc_enable_db;
GO

IF OBJECT_ID(N'dbo._powersync_checkpoints', N'U') IS NULL
  CREATE TABLE dbo._powersync_checkpoints (
    id int IDENTITY PRIMARY KEY,
    last_updated datetime NOT NULL DEFAULT (GETDATE())
  );
GO

-- CDC on each replicated table (gating role cdc_reader, as in PowerSync's set-up). Enabling the first
-- table creates the capture and cleanup jobs; while the Agent is still starting that fails with 14258
-- (or 22832/22836 wrapping it), so wait and try again for up to a minute.
SET NOCOUNT ON;
DECLARE @name sysname, @tries int, @done bit;
DECLARE cdc_tables CURSOR LOCAL FAST_FORWARD FOR
  SELECT name FROM (VALUES (1, N'_powersync_checkpoints'), (2, N'lists'), (3, N'todos'),
                           (4, N'powersync_upload_errors')) AS t(ord, name) ORDER BY ord;
OPEN cdc_tables;
FETCH NEXT FROM cdc_tables INTO @name;
WHILE @@FETCH_STATUS = 0
BEGIN
  SELECT @tries = 30, @done = 0;
  WHILE @done = 0
  BEGIN
    BEGIN TRY
      IF NOT EXISTS (SELECT 1 FROM cdc.change_tables WHERE source_object_id = OBJECT_ID(N'dbo.' + @name))
      BEGIN
        EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = @name,
             @role_name = N'cdc_reader', @supports_net_changes = 0;
        PRINT N'CDC enabled on dbo.' + @name;
      END
      SET @done = 1;
    END TRY
    BEGIN CATCH
      IF XACT_STATE() <> 0 ROLLBACK;
      IF ERROR_NUMBER() NOT IN (14258, 22832, 22836) OR @tries <= 1
      BEGIN
        THROW;
      END
      SET @tries -= 1;
      WAITFOR DELAY '00:00:02';
    END CATCH
  END
  FETCH NEXT FROM cdc_tables INTO @name;
END
CLOSE cdc_tables;
DEALLOCATE cdc_tables;
GO

-- Poll the log every second instead of every 5 s, so local changes reach PowerSync quickly; the capture
-- job picks the new interval up when it restarts.
SET NOCOUNT ON;
IF EXISTS (SELECT 1 FROM msdb.dbo.cdc_jobs WHERE database_id = DB_ID() AND job_type = N'capture' AND pollinginterval <> 1)
BEGIN
  EXEC sys.sp_cdc_change_job @job_type = N'capture', @pollinginterval = 1;
  BEGIN TRY
    EXEC sys.sp_cdc_stop_job @job_type = N'capture';
    WAITFOR DELAY '00:00:03';  -- the Agent stops the job asynchronously
    EXEC sys.sp_cdc_start_job @job_type = N'capture';
  END TRY
  BEGIN CATCH
    PRINT N'note: restart the CDC capture job to use the 1 s polling interval (' + ERROR_MESSAGE() + N')';
  END CATCH
END
GO

-- Fail loudly if anything PowerSync needs is missing.
SET NOCOUNT ON;
DECLARE @missing nvarchar(1000) = N'';
IF (SELECT is_cdc_enabled FROM sys.databases WHERE database_id = DB_ID()) = 0
  SET @missing += N' CDC on the database;';
IF NOT EXISTS (SELECT 1 FROM msdb.dbo.cdc_jobs WHERE database_id = DB_ID() AND job_type = N'capture')
  SET @missing += N' the CDC capture job;';
SELECT @missing += N' CDC on dbo.' + t.name + N';'
  FROM (VALUES (N'_powersync_checkpoints'), (N'lists'), (N'todos'), (N'powersync_upload_errors')) AS t(name)
  WHERE NOT EXISTS (SELECT 1 FROM cdc.change_tables WHERE source_object_id = OBJECT_ID(N'dbo.' + t.name));
IF @missing <> N''
BEGIN
  DECLARE @message nvarchar(2048) = N'PowerSync set-up incomplete, missing:' + @missing;
  THROW 50001, @message, 1;
END
SELECT OBJECT_SCHEMA_NAME(source_object_id) + N'.' + OBJECT_NAME(source_object_id) AS cdc_table,
       capture_instance
  FROM cdc.change_tables ORDER BY cdc_table;
GO
