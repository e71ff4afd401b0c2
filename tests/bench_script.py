#!/usr/bin/python3
# The hand-written sync a data team would write (requests + psycopg2 execute_values), kept as a
# yardstick for tests/bench.sh: it walks the same export feed and upserts id, modifiedOn, active
# and the record as jsonb, one transaction per page with the token. No typed columns, no child
# rows, no guard. Usage: bench_script.py API_URL AUTH_URL TENANT CLIENT_ID APP_KEY DSN TABLE
# (the client secret comes from the environment, BENCH_CLIENT_SECRET).
import json
import os
import sys

import psycopg2
import psycopg2.extras
import requests

api, auth, tenant, client_id, app_key, dsn, table = sys.argv[1:8]
secret = os.environ["BENCH_CLIENT_SECRET"]
session = requests.Session()
token = session.post(auth + "/connect/token", data={
    "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}).json()["access_token"]
headers = {"ST-App-Key": app_key, "Authorization": "Bearer " + token}

db = psycopg2.connect(dsn)
cur = db.cursor()
cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (tenant_id bigint, id bigint, modified_on timestamptz, "
            "active boolean, raw jsonb, PRIMARY KEY (tenant_id, id))")
cur.execute(f"CREATE TABLE IF NOT EXISTS {table}_state (tenant_id bigint PRIMARY KEY, token text)")
db.commit()

url = f"{api}/accounting/v2/tenant/{tenant}/export/invoices"
params = {}
records = 0
while True:
    page = session.get(url, headers=headers, params=params).json()
    rows = [(int(tenant), r["id"], r.get("modifiedOn"), r.get("active", True),
             json.dumps(r).replace("\\u0000", "\\ufffd")) for r in page["data"]]
    psycopg2.extras.execute_values(
        cur, f"INSERT INTO {table} (tenant_id, id, modified_on, active, raw) VALUES %s "
             "ON CONFLICT (tenant_id, id) DO UPDATE SET modified_on = EXCLUDED.modified_on, "
             "active = EXCLUDED.active, raw = EXCLUDED.raw", rows, page_size=1000)
    cur.execute(f"INSERT INTO {table}_state VALUES (%s, %s) ON CONFLICT (tenant_id) DO UPDATE SET token = EXCLUDED.token",
                (int(tenant), page["continueFrom"]))
    db.commit()
    records += len(rows)
    if not page["hasMore"]:
        break
    params = {"from": page["continueFrom"]}
print(records)
