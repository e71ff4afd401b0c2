-- The list of applied migrations. Not a migration itself (version 0): stsync runs this file
-- before reading the list, on every migrate, so it must stay idempotent.
CREATE TABLE IF NOT EXISTS {{schema}}.schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
