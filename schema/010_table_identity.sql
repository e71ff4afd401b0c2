-- The identity of the tables a job's state describes: the OIDs of the job table and its child
-- tables (in job-file order) when the state last moved. A table dropped, renamed or re-created
-- since then has another OID (or none), and the stored token would cover rows it does not hold.
ALTER TABLE {{schema}}.sync_state ADD COLUMN table_oids oid[];
