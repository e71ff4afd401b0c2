-- What each run asked of the API (every attempt), how many answers were 429, how many retries:
-- the figures behind the metrics, kept with the run.
ALTER TABLE {{schema}}.sync_runs ADD COLUMN requests bigint NOT NULL DEFAULT 0;
ALTER TABLE {{schema}}.sync_runs ADD COLUMN throttled bigint NOT NULL DEFAULT 0;
ALTER TABLE {{schema}}.sync_runs ADD COLUMN retries bigint NOT NULL DEFAULT 0;
