-- A resume point that never claims more than is stored: `complete_through` moves only when a
-- walk reached the end of the feed (export: hasMore=false; list: a window closed), capped by the
-- server's clock. `watermark` stays the max modifiedOn stored (capped the same way), for lag.
ALTER TABLE {{schema}}.sync_state ADD COLUMN complete_through timestamptz;
-- Jobs that finished a run before this migration reached the feed's end then.
UPDATE {{schema}}.sync_state SET complete_through = watermark WHERE last_success_at IS NOT NULL;

-- Quarantined records get an id, so that `stsync quarantine --retry` can remove exactly the
-- ones it stored; `stored_at` marks a record that a later retry stored.
ALTER TABLE {{schema}}.quarantine ADD COLUMN quarantine_id bigserial PRIMARY KEY;
ALTER TABLE {{schema}}.quarantine ADD COLUMN stored_at timestamptz;
