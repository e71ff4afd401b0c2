-- The current round of `stsync run` across a fleet: when it started. A round lasts while any of
-- its processes lives (they hold a shared advisory lock); a process that starts then joins it, so
-- a tenant finished in the round is not synced again by a late starter.
CREATE TABLE {{schema}}.fleet_round (
  id          integer     PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  started_at  timestamptz NOT NULL
);
