-- The change cursor (README, "Reading changes"). Every job and child table has change_xid, the
-- id of the transaction that last wrote the row (added by the run that first meets the table;
-- rows written before that keep NULL and are read by the first full read). A reader remembers
-- one number, :last, and in one REPEATABLE READ transaction reads
--   SELECT * FROM {{schema}}.changes_since(NULL::{{schema}}.invoices, :last);
--   SELECT {{schema}}.change_horizon();   -- the next :last
-- Rows of transactions still open when the snapshot was taken have change_xid >= the horizon:
-- they are not read now and are read next time, whatever order writers commit in.

-- The smallest transaction id that may still be running: every change below it is committed
-- (or rolled back) in the reader's snapshot.
CREATE OR REPLACE FUNCTION {{schema}}.change_horizon() RETURNS xid8
  LANGUAGE sql STABLE AS $$ SELECT pg_snapshot_xmin(pg_current_snapshot()) $$;

-- The rows of the table whose type `rows` names (NULL::schema.table) written since `since`
-- (a previous horizon; '0' for everything written since the cursor existed) and before the
-- current horizon, in change order.
CREATE OR REPLACE FUNCTION {{schema}}.changes_since(rows anyelement, since xid8) RETURNS SETOF anyelement
  LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN QUERY EXECUTE format('SELECT * FROM %s WHERE change_xid >= $1 AND change_xid < $2 ORDER BY change_xid',
                              pg_typeof(rows))
    USING since, pg_snapshot_xmin(pg_current_snapshot());
END
$$;
