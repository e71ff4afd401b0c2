-- stsync bookkeeping: one state row per (tenant, job) and one history row per job run.
-- {{schema}} is replaced by the configured schema, quoted as an identifier.
CREATE TABLE {{schema}}.sync_state (
  tenant_id        bigint      NOT NULL,
  job              text        NOT NULL,
  export_token     text,                      -- continueFrom of the last committed export page
  watermark        timestamptz,               -- max modifiedOn stored (export) / window end (list)
  list_cursor      timestamptz,               -- list mode: end of the last stored window
  list_pass_start  timestamptz,               -- list mode: server time when this pass began
  list_pass_field  text,                      -- list mode: 'created' (first pass) or 'modified'
  rows_total       bigint      NOT NULL DEFAULT 0,
  pages_total      bigint      NOT NULL DEFAULT 0,
  last_run_id      bigint,
  last_success_at  timestamptz,
  last_error       text,
  last_error_at    timestamptz,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, job)
);

CREATE TABLE {{schema}}.sync_runs (
  run_id          bigserial   PRIMARY KEY,
  tenant_id       bigint      NOT NULL,
  job             text        NOT NULL,
  mode            text        NOT NULL,
  started_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  pages           bigint      NOT NULL DEFAULT 0,
  rows_inserted   bigint      NOT NULL DEFAULT 0,
  rows_updated    bigint      NOT NULL DEFAULT 0,
  rows_unchanged  bigint      NOT NULL DEFAULT 0,
  outcome         text        NOT NULL DEFAULT 'running'
                  CHECK (outcome IN ('running', 'succeeded', 'failed', 'interrupted')),
  error           text
);
CREATE INDEX sync_runs_job_idx ON {{schema}}.sync_runs (tenant_id, job, run_id DESC);
