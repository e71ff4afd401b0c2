-- Records a job configured with `quarantine = true` could not store: kept with the error and
-- their raw text (NUL characters replaced, as everywhere), in the same transaction as the page.
CREATE TABLE {{schema}}.quarantine (
  tenant_id   bigint      NOT NULL,
  job         text        NOT NULL,
  record_id   bigint,                  -- null when the record has no usable id
  page        text        NOT NULL,    -- where it was read: the page and its token or window
  error       text        NOT NULL,
  raw         text        NOT NULL,
  seen_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_job_idx ON {{schema}}.quarantine (tenant_id, job, seen_at DESC);
