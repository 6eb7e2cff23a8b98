-- Demo schema (the PowerSync to-do example) for PostgreSQL 13+.
CREATE TABLE IF NOT EXISTS lists (
  id uuid NOT NULL PRIMARY KEY,
  owner_id uuid NOT NULL,
  name varchar(100) NOT NULL,
  created_at timestamp(3) NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE UNIQUE INDEX IF NOT EXISTS ux_lists_owner_name ON lists(owner_id, name);
CREATE TABLE IF NOT EXISTS todos (
  id uuid NOT NULL PRIMARY KEY,
  list_id uuid NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
  owner_id uuid NOT NULL,
  description varchar(500) NOT NULL,
  completed boolean NOT NULL DEFAULT false,
  completed_at timestamp(3) NULL,
  priority integer NULL,
  amount numeric(10,2) NULL,
  tags jsonb NULL,
  created_at timestamp(3) NULL
);
