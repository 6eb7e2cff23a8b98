-- Demo schema (the PowerSync to-do example) for MySQL 8 / MariaDB 10.6+.
-- Ids compare as sent (utf8mb4_bin): under the table's case- and accent-insensitive collation two
-- client ids such as 'abc' and 'ábc' would be one row on the server and two on the device.
CREATE TABLE IF NOT EXISTS lists (
  id char(36) COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  owner_id char(36) COLLATE utf8mb4_bin NOT NULL,
  name varchar(100) NOT NULL,
  created_at datetime(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  UNIQUE KEY ux_lists_owner_name (owner_id, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE IF NOT EXISTS todos (
  id char(36) COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  list_id char(36) COLLATE utf8mb4_bin NOT NULL,
  owner_id char(36) COLLATE utf8mb4_bin NOT NULL,
  description varchar(500) NOT NULL,
  completed boolean NOT NULL DEFAULT false,
  completed_at datetime(3) NULL,
  priority int NULL,
  amount decimal(10,2) NULL,
  tags json NULL,
  created_at datetime(3) NULL,
  CONSTRAINT fk_todos_list FOREIGN KEY (list_id) REFERENCES lists(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
