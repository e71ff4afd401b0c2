-- Every resource: keys may be text (GUIDs, composite keys), so a quarantined record's id is
-- kept as text. The invoices job's item rows were in `invoice_items`, which is now the name of
-- ServiceTitan's own invoice-items resource: they move to `invoices_items` (the child-table
-- naming of every job: <job>_<array>). Both tables are small or stsync's own; the rename waits
-- at most lock_timeout like every migration statement.
ALTER TABLE {{schema}}.quarantine ALTER COLUMN record_id TYPE text USING record_id::text;
-- The schema's name comes from the session (stsync.schema, set by the migration runner), never
-- pasted into the block: a name holding a quote or $$ is just a name.
DO $$
DECLARE
  s text := current_setting('stsync.schema');
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = to_regclass(format('%I.invoice_items', s)) AND a.attname = 'position'
               AND NOT a.attisdropped)
     AND to_regclass(format('%I.invoices_items', s)) IS NULL THEN
    EXECUTE format('ALTER TABLE %I.invoice_items RENAME TO invoices_items', s);
  END IF;
END $$;
-- The state of a job's hard-delete sweep and the run's outcome for jobs the tenant's app may not read.
ALTER TABLE {{schema}}.sync_state ADD COLUMN reconciled_at timestamptz;
ALTER TABLE {{schema}}.sync_state ADD COLUMN not_permitted_at timestamptz;
ALTER TABLE {{schema}}.sync_runs DROP CONSTRAINT IF EXISTS sync_runs_outcome_check;
ALTER TABLE {{schema}}.sync_runs ADD CONSTRAINT sync_runs_outcome_check
  CHECK (outcome IN ('running', 'succeeded', 'failed', 'interrupted', 'not_permitted'));
