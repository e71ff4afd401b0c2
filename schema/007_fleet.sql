-- The fleet: processes started with the same config share the tenants. Per tenant, when a
-- process last started and finished a round of its jobs (and which process: host:pid). The lock
-- that keeps two processes off one tenant is a session advisory lock, not a row lock: it dies
-- with its process.
CREATE TABLE {{schema}}.fleet_tenants (
  tenant_id          bigint      PRIMARY KEY,
  round_started_at   timestamptz,
  round_finished_at  timestamptz,
  holder             text
);
