-- Databases of the docker-compose SQL Server (run in master by init.sh).
-- powersync: the demo schema and the errors table, with CDC, for a local PowerSync Service.
-- powersync_upload_test: empty scratch database for `make test`; the test suite drops every user table
-- in it, so keep nothing there (and no CDC: the tests create and drop tables all the time).
SET NOCOUNT ON;
IF DB_ID(N'powersync') IS NULL CREATE DATABASE powersync;
IF DB_ID(N'powersync_upload_test') IS NULL CREATE DATABASE powersync_upload_test;
