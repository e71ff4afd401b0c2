-- A backfill in progress (stsync run --since/--until): its window and how far it got, so that an
-- interrupted one resumes. The job's own token and watermark are never moved by a backfill.
ALTER TABLE {{schema}}.sync_state ADD COLUMN backfill text;
