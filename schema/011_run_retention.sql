-- sync_runs keeps one row per job run; old rows are pruned after [run] keep_runs_days (default
-- 30). What they counted is first added here, per (tenant, job), so that the metrics' totals
-- (rows, pages, requests, failed runs) never go down when history is pruned.
CREATE TABLE {{schema}}.sync_run_totals (
  tenant_id      bigint NOT NULL,
  job            text   NOT NULL,
  runs           bigint NOT NULL DEFAULT 0,
  failed_runs    bigint NOT NULL DEFAULT 0,
  pages          bigint NOT NULL DEFAULT 0,
  rows_inserted  bigint NOT NULL DEFAULT 0,
  rows_updated   bigint NOT NULL DEFAULT 0,
  requests       bigint NOT NULL DEFAULT 0,
  throttled      bigint NOT NULL DEFAULT 0,
  retries        bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, job)
);
-- The pruning finds old runs by when they finished.
CREATE INDEX sync_runs_finished_idx ON {{schema}}.sync_runs (finished_at);
