-- Report jobs (README, "Reports"): each (tenant, job, day) stored, with its row count and a digest
-- of its rows, so that a day read again with the same numbers is not rewritten, and a reader
-- following the change cursor of this table learns which days were replaced (a day's rows are
-- replaced as a whole: rows that went are not in the report table any more).
CREATE TABLE {{schema}}.sync_report_days (
  tenant_id bigint NOT NULL,
  job text NOT NULL,
  day date NOT NULL,
  rows integer NOT NULL,
  digest text NOT NULL,
  read_at timestamptz NOT NULL DEFAULT now(),
  change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  PRIMARY KEY (tenant_id, job, day)
);
CREATE INDEX sync_report_days_change_idx ON {{schema}}.sync_report_days (change_xid);
COMMENT ON TABLE {{schema}}.sync_report_days IS
  'stsync: the days each report job stored per tenant (rows, digest); change_xid moves when a day''s rows are replaced';
-- The report's fields (name:type, …) as the job last stored them: a change is logged once.
ALTER TABLE {{schema}}.sync_state ADD COLUMN report_fields text;
