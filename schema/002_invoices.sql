-- (Was: the invoices table. Job tables are created from their job files only, by
-- ensure_job_tables; this version number stays taken so that installed schemas keep their
-- history.)
SELECT 1;
