-- Demo schema (the PowerSync to-do example) for SQLite 3.35+; run with PRAGMA foreign_keys = ON.
CREATE TABLE IF NOT EXISTS lists (
  id TEXT NOT NULL PRIMARY KEY,
  owner_id TEXT NOT NULL,
  name VARCHAR(100) NOT NULL,
  created_at DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now'))
);
CREATE UNIQUE INDEX IF NOT EXISTS ux_lists_owner_name ON lists(owner_id, name);
CREATE TABLE IF NOT EXISTS todos (
  id TEXT NOT NULL PRIMARY KEY,
  list_id TEXT NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
  owner_id TEXT NOT NULL,
  description VARCHAR(500) NOT NULL,
  completed BOOLEAN NOT NULL DEFAULT 0,
  completed_at DATETIME NULL,
  priority INTEGER NULL,
  amount DECIMAL(10,2) NULL,
  tags JSON NULL CHECK (tags IS NULL OR json_valid(tags)),
  created_at DATETIME NULL
);
