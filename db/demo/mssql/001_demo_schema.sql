-- Demo schema (the PowerSync to-do example) for SQL Server 2022+ (what PowerSync's SQL Server source requires).
IF OBJECT_ID(N'dbo.lists', N'U') IS NULL
CREATE TABLE dbo.lists (
  id uniqueidentifier NOT NULL PRIMARY KEY,
  owner_id uniqueidentifier NOT NULL,
  name nvarchar(100) NOT NULL,
  created_at datetime2(3) NOT NULL DEFAULT SYSUTCDATETIME()
);
-- The guard names the table by object id: index names are only unique per table, and Babelfish stores
-- the declared name with the table name and a hash appended (hence the prefix match).
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.lists', N'U') AND name LIKE N'ux[_]lists[_]owner[_]name%')
CREATE UNIQUE INDEX ux_lists_owner_name ON dbo.lists(owner_id, name);
IF OBJECT_ID(N'dbo.todos', N'U') IS NULL
CREATE TABLE dbo.todos (
  id uniqueidentifier NOT NULL PRIMARY KEY,
  list_id uniqueidentifier NOT NULL REFERENCES dbo.lists(id) ON DELETE CASCADE,
  owner_id uniqueidentifier NOT NULL,
  description nvarchar(500) NOT NULL,
  completed bit NOT NULL DEFAULT 0,
  completed_at datetime2(3) NULL,
  priority int NULL,
  amount decimal(10,2) NULL,
  tags nvarchar(max) NULL CONSTRAINT ck_todos_tags_json CHECK (tags IS NULL OR ISJSON(tags) = 1),
  created_at datetime2(3) NULL
);
