#!/usr/bin/env python3
"""Writes one job file per ServiceTitan resource, and the sandbox's resource table, from the
resource catalogue (../shared/servicetitan/resources.json, built from ServiceTitan's OpenAPI specs).

    python3 jobs/generate.py [path/to/resources.json]

Run it when the catalogue changes and review the diff like code. Two kinds of output:
  jobs/<name>.toml          how stsync syncs the resource (mode, key, filters, typed columns)
  src/sandbox/resources.json what the sandbox serves (paths, parameters and their defaults,
                            fields and types), taken from the catalogue only, never from the job
                            files, so that a wrong job file is caught by the sandbox, not mirrored.
Job files listed in HAND_WRITTEN are kept as they are (they carry hand-picked hard cases).
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_CATALOGUE = os.path.join(ROOT, "..", "shared", "servicetitan", "resources.json")

HAND_WRITTEN = {"invoices", "employees"}
# Parameters sent although not required, where the spec leaves the default unstated: tasks'
# includeSubtasks (nullable, no default) is sent as true, so that subtasks are read whichever
# default the server has (docs/resources.md, "Where the specs are silent").
EXTRA_LIST_PARAMS = {"tasks": "includeSubtasks=true"}
# Arrays of objects kept as child tables: line items and the like, which reports join on.
CHILD_ARRAYS = {"items", "expenseItems", "splits", "appliedTo", "history"}
# Column names stsync itself uses in every job table.
RESERVED = {"tenant_id", "id", "modified_on", "active", "raw", "synced_at", "deleted_at", "parent_id"}
CHILD_RESERVED = {"tenant_id", "parent_id", "position", "raw", "synced_at"}
# Endpoints that are not a feed of records with an identity, or that the later spec downloads no
# longer have: generated, but disabled by default (a user can enable them; see the README).
DISABLED = {
    "attributed_leads": "a report over a required fromUtc/toUtc range; its rows have no key (dateTime is not unique)",
    "ads_performance": "an aggregate over a required date range and segmentation type, not records",
    "scheduler_performance": "one aggregate per scheduler over a required session date range, not records",
    "opportunities": "absent from the 2026-07 spec download (the endpoint was withdrawn); no schema",
    "opportunity_followups": "absent from the 2026-07 spec download (the endpoint was withdrawn); no schema",
    "suppressions": "absent from the 2026-07 spec download (the endpoint was withdrawn)",
    "call_opt_outs": "absent from the 2026-07 spec download (telecom v3 opt-outs were withdrawn)",
}
# Every run re-reads these: a fan-out job follows its parent's changed rows.
CADENCE = {"reference": "6h", "transactional": "15m", "child": "1h", "snapshot": "1h"}


def snake(path):
    out = ""
    for c in path:
        if c == ".":
            out += "_"
        elif c.isupper():
            if out and out[-1] != "_":
                out += "_"
            out += c.lower()
        else:
            out += c
    return out


# PostgreSQL's reserved keywords (categories R and T): a column named like one would need quoting in
# every query, so it gets "_value" (the same rule as column_name_for in src/config/job_spec.cc).
RESERVED_WORDS = set("""all analyse analyze and any array as asc asymmetric authorization binary both case cast check collate collation column concurrently constraint create cross current_catalog current_date current_role current_schema current_time current_timestamp current_user default deferrable desc distinct do else end except false fetch for foreign freeze from full grant group having ilike in initially inner intersect into is isnull join lateral leading left like limit localtime localtimestamp natural not notnull null offset on only or order outer overlaps placing primary references returning right select session_user similar some symmetric table tablesample then to trailing true union unique user using variadic verbose when where window with""".split())


def column_name(path):
    name = snake(path)
    return name + "_value" if name in RESERVED_WORDS else name


def pg_type(field):
    t, f = field.get("type"), field.get("format")
    if t == "integer":
        return "integer" if f == "int32" else "bigint"
    if t == "number":
        return "numeric"
    if t == "boolean":
        return "boolean"
    if t == "string":
        if f == "date-time":
            return "timestamptz"
        if f == "date":
            return "date"
        return "text"
    return "jsonb"


def toml_str(s):
    return json.dumps(s, ensure_ascii=False)


def contract_one_of():
    """The filter combinations the specs' text requires, by list path (from src/sandbox/contract.json)."""
    with open(os.path.join(ROOT, "src", "sandbox", "contract.json")) as f:
        ops = json.load(f)["operations"]
    return {o["path"]: o["one_of"] for o in ops if o["method"] == "GET" and "one_of" in o}


CONTRACT_ONE_OF = contract_one_of()


def find_parent(res, by_list_path):
    # "accounting/v2/tenant/{tenant}/journal-entries/{id}/details" → the resource listing
    # "accounting/v2/tenant/{tenant}/journal-entries".
    path = res["list_path"]
    m = re.match(r"(.*)/\{([A-Za-z]+)\}/[^{}]*$", path)
    if not m:
        return None, None
    parent = by_list_path.get(m.group(1))
    if parent is None:
        # Another module's resource (forms' job attachments under jpm's jobs): match the part
        # after the tenant.
        tail = m.group(1).split("/tenant/{tenant}/", 1)[-1]
        matches = [r for p, r in by_list_path.items() if p.split("/tenant/{tenant}/", 1)[-1] == tail]
        parent = matches[0] if len(matches) == 1 else None
    if parent is None:
        raise SystemExit(f"{res['name']}: no resource lists the parents of {path}")
    return parent, m.group(2)


def active_filter(params):
    names = {p["name"]: p for p in params}
    if "activeState" in names:
        return "activeState=All"
    if "active" in names:
        return "active=Any"
    if "includeInactive" in names:
        return "includeInactive=true"
    if "activeOnly" in names:
        return "activeOnly=false"
    return ""


def window_for(res):
    """How a list walk finds changed rows: (mode, created_field, created_params)."""
    mode = res["sync_mode"]
    fields = {f["name"] for f in res["fields"]}
    if mode == "list_incremental_modified":
        # A record that does not carry modifiedOn cannot show that the server honoured the
        # window (reviews, installed-equipment custom fields): read whole instead.
        return ("list", None) if "modifiedOn" in fields else ("full", None)
    if mode == "list_created_window_only":
        # Append-only when the record has createdOn and no modifiedOn; a record that can change
        # (it has modifiedOn) or cannot be placed in a window (no createdOn) is re-read whole.
        if "createdOn" in fields and "modifiedOn" not in fields:
            return "created", None
        return "full", None
    if mode == "list_other_window":
        if res["name"] == "form_submissions":
            return "created", ("submittedOn", "submittedOnOrAfter", "submittedBefore")
        return "full", None
    return "full", None


def columns_for(fields, reserved, key_fields):
    cols = []
    used = set()
    for f in fields:
        name = f["name"]
        if name in ("modifiedOn", "active") or (name == "id" and "id" in key_fields):
            continue
        t = pg_type(f)
        entries = []
        subs = {s["name"]: s for s in f.get("sub_fields") or []}
        if t == "jsonb" and f.get("type") == "object" and "id" in subs:
            entries.append((name + ".id", pg_type(subs["id"])))
            if "name" in subs:
                entries.append((name + ".name", pg_type(subs["name"])))
        else:
            if t == "text" and f.get("money_like_string"):
                t = "numeric"
            entries.append((name, t))
        for path, ty in entries:
            col = column_name(path)
            if col in reserved or col in used:
                col = column_name(path.replace(".", "__"))
                if col in reserved or col in used:
                    col += "_field"
            used.add(col)
            cols.append((path, ty, col))
    return cols


def looks_like_money(field):
    """An element field the spec types as a string whose name says it is an amount: the API sends
    a decimal in a string (as it does for the top-level fields the catalogue marks money-like)."""
    return field.get("type") == "string" and not field.get("format") and \
        re.search(r"(?i)(total|amount|price|cost|qty|quantity|rate)$", field["name"]) is not None


def money_fields(res):
    return {c["path"] for c in res["columns"] if c.get("money_like_string")}


SPECS_DIR = os.path.join(ROOT, "..", "shared", "servicetitan", "openapi")
_specs = {}


def spec_named(spec_file):
    """The official OpenAPI spec a catalogue entry names (specs/crm-v2.json), or None."""
    name = os.path.basename(spec_file or "")
    if name not in _specs:
        path = os.path.join(SPECS_DIR, name)
        _specs[name] = json.load(open(path)) if name and os.path.exists(path) else None
    return _specs[name]


def schema_props(spec, schema):
    """The properties of a schema, through $ref, allOf and oneOf."""
    seen = 0
    while isinstance(schema, dict) and seen < 10:
        seen += 1
        if "$ref" in schema:
            schema = spec.get("components", {}).get("schemas", {}).get(schema["$ref"].split("/")[-1], {})
        elif schema.get("allOf") or schema.get("oneOf"):
            merged = {}
            for part in schema.get("allOf") or schema.get("oneOf"):
                merged.update(schema_props(spec, part))
            return merged
        elif schema.get("type") == "array" and "items" in schema:
            schema = schema["items"]
        else:
            return schema.get("properties") or {}
    return {}


def clean_text(text):
    text = re.sub(r"<[^>]+>", "", text or "")
    return " ".join(text.split())


def field_description(spec, schema_name, path):
    """The spec's description of the field at `path` (dotted) in `schema_name`, or None."""
    if spec is None or not schema_name:
        return None
    schema = {"$ref": "#/components/schemas/" + schema_name}
    prop = None
    for part in path.split("."):
        prop = schema_props(spec, schema).get(part)
        if prop is None:
            return None
        schema = prop
    text = clean_text(prop.get("description")) if isinstance(prop, dict) else ""
    if not text and isinstance(prop, dict) and "$ref" in prop:
        target = spec.get("components", {}).get("schemas", {}).get(prop["$ref"].split("/")[-1], {})
        text = clean_text(target.get("description"))
    return text or None


def table_description(res, spec):
    """What the table holds: the resource, its module, and the spec's summary of its endpoint."""
    summary = None
    if spec is not None:
        prefix = res.get("url_prefix", "")
        for path in (res.get("export_path"), res.get("list_path")):
            if not path:
                continue
            op = (spec.get("paths", {}).get(path[len(prefix):], {}) or {}).get("get") or {}
            summary = clean_text(op.get("description") or op.get("summary"))
            if summary:
                break
    text = f"ServiceTitan {res.get('module_title', res.get('module', ''))}: {res['name']}"
    return text + (f" ({summary})" if summary else "")


def write_columns(lines, cols, key="columns", describe=None):
    lines.append(f"{key} = [")
    for path, ty, col in cols:
        default = column_name(path)
        extra = "" if col == default else f", name = {toml_str(col)}"
        text = describe(path) if describe else None
        if text:
            extra += f", description = {toml_str(text)}"
        lines.append(f"  {{ path = {toml_str(path)}, type = {toml_str(ty)}{extra} }},")
    lines.append("]")


def job_file(res, by_list_path):
    name = res["name"]
    flags = res["flags"]
    mode, custom_window = window_for(res)
    has_export = bool(res.get("export_path"))
    list_info = res.get("list") or {}
    list_path = res.get("list_path") or ""
    for alt in res.get("alternative_endpoints") or []:
        if alt.get("path", "").endswith("/paginated"):
            list_path = alt["path"]  # the bare-array list has no paging; its paged twin does
    parent = parent_param = None
    if res["sync_mode"] == "per_parent":
        parent, parent_param = find_parent(res, by_list_path)
    if has_export:
        mode = "export"

    key = res.get("suggested_primary_key") or []
    if name == "customer_notes" or name.endswith("_notes"):
        key = ["id"] if flags.get("has_id") else key
    id_type = flags.get("id_type") or ""
    if key == ["id"]:
        key_type = "bigint" if id_type.startswith("integer") or (not id_type and name == "job_attachments") else "text"
        if not id_type and name != "job_attachments":
            key_type = "text"
    elif len(key) == 1:
        f = next((f for f in res["fields"] if f["name"] == key[0]), None)
        key_type = pg_type(f) if f is not None and pg_type(f) in ("bigint", "integer") else "text"
        if key_type == "integer":
            key_type = "bigint"
    else:
        key_type = "text"

    # data_only: {data[]} without paging fields; object: the record itself; none: no schema in the
    # spec (read as the usual paged list).
    response = {"data_only": "data", "object": "object"}.get(list_info.get("response_shape"), "paged")
    if mode == "export":
        response = "paged"
    money = money_fields(res)
    fields = []
    for f in res["fields"]:
        f = dict(f)
        if f["name"] in money:
            f["money_like_string"] = True
        fields.append(f)

    children = []
    child_names = set()
    for f in fields:
        if f["name"] in CHILD_ARRAYS and f.get("type") == "array" and f.get("element_fields"):
            elems = []
            for e in f["element_fields"]:
                e = dict(e)
                if looks_like_money(e):
                    e["money_like_string"] = True
                elems.append(e)
            table = f"{name}_{snake(f['name'])}" if name != "job_history" else "job_history_entries"
            children.append((f["name"], table, columns_for(elems, CHILD_RESERVED, [])))
            child_names.add(f["name"])

    cols = columns_for(fields, RESERVED, key)

    out = []
    title = res.get("module_title") or res["module"]
    out.append(f"# ServiceTitan {name} ({title}). Generated by jobs/generate.py from the resource catalogue;")
    out.append("# change the script (or list the job as hand-written there), not this file.")
    for n in res.get("notes") or []:
        out.append(f"# API note: {n}")
    out.append(f"name = {toml_str(name)}")
    if list_path:
        out.append(f"list_path = {toml_str(list_path.replace('{' + parent_param + '}', '{parent}') if parent_param else list_path)}")
    if has_export:
        out.append(f"export_path = {toml_str(res['export_path'])}")
    out.append(f"mode = {toml_str(mode)}")
    if name in DISABLED:
        out.append(f"# Disabled by default: {DISABLED[name]}.")
        out.append("enabled = false")
    out.append(f"every = {toml_str(CADENCE.get(res.get('size_class'), '1h'))}")
    if key != ["id"] or key_type != "bigint":
        out.append(f"key = [{', '.join(toml_str(k) for k in key)}]")
        out.append(f"key_type = {toml_str(key_type)}")
        if not key:
            out.append("# The records carry no key: each is identified by its position in its listing.")
    if parent:
        out.append(f"parent = {toml_str(parent['name'])}")
    if mode == "created":
        if custom_window:
            fld, lo, hi = custom_window
            out.append(f"created_field = {toml_str(fld)}")
            out.append(f"created_params = [{toml_str(lo)}, {toml_str(hi)}]")
    params = list_info.get("query_params") or []
    inactive = active_filter(params)
    if inactive:
        out.append(f"inactive_filter = {toml_str(inactive)}")
    # Parameters the spec requires besides paging and the windows: sent with every list request.
    fixed = [p for p in params if p.get("required") and p["name"] not in ("page", "pageSize", "includeTotal")
             and p.get("type") == "boolean" and not (inactive or "").startswith(p["name"] + "=")]
    pairs = [p["name"] + "=false" for p in fixed] + ([EXTRA_LIST_PARAMS[name]] if name in EXTRA_LIST_PARAMS else [])
    if pairs:
        out.append(f"list_params = {toml_str('&'.join(pairs))}")
    # A filter the spec's text requires one of ("Either CustomerIds, modifiedOn or modifiedOnOrAfter
    # parameter must be specified"): a listing of everything sends modifiedOnOrAfter at a floor.
    # Paging parameters the list does not declare are not sent (the API would ignore them).
    std = list_info.get("standard_params_present") or {}
    if response == "paged" and std and not all(std.get(n) for n in ("page", "pageSize", "includeTotal")):
        declared = [n for n in ("page", "pageSize", "includeTotal") if std.get(n)]
        out.append(f"list_paging = [{', '.join(toml_str(n) for n in declared)}]")
    if mode == "export" and any(p.get("required") and p["name"] == "ids" for p in params):
        # Its list answers only rows asked for by id: no listing can find hard deletes.
        out.append('reconcile_every = "0"  # the list endpoint requires ids: it cannot list everything')
    rule = CONTRACT_ONE_OF.get(list_path)
    if rule and "modifiedOnOrAfter" in rule["names"]:
        out.append('list_floor = "modifiedOnOrAfter"')
    export_params = [p["name"] for p in (res.get("export") or {}).get("query_params") or []]
    if has_export and "active" in export_params:
        out.append('export_filter = "active=Any"')
    if response != "paged":
        out.append(f"response = {toml_str(response)}")
    maxima = [p.get("maximum") for p in params if p["name"] == "pageSize" and p.get("maximum")]
    page_size = 500 if "maximum 500" in " ".join(res.get("notes") or []) else 5000
    if maxima:
        page_size = min(page_size, int(maxima[0]))
    if page_size != 5000:
        out.append(f"page_size = {page_size}")
    pnames = {p["name"] for p in params}
    if "ids" in pnames and key == ["id"]:
        ids = next(p for p in params if p["name"] == "ids")
        # An array parameter is sent repeated (ids=1&ids=2); elsewhere ids is one comma list.
        out.append('ids_param = "repeated"' if ids.get("type") == "array" else "ids_param = true")
    sort = next((p for p in params if p["name"] == "sort"), None)
    if sort and "Id" in (sort.get("sort_fields") or []):
        out.append('list_sort = "+Id"')
    spec = spec_named(res.get("spec_file"))
    out.append(f"description = {toml_str(table_description(res, spec))}")
    out.append("")
    write_columns(out, cols, describe=lambda path: field_description(spec, res.get("record_schema"), path))
    for path, table, ccols in children:
        out.append("")
        out.append(f"# One row per element of `{path}` (keyed by tenant, parent and position), always equal to")
        out.append("# the array in the parent's stored raw.")
        out.append("[[children]]")
        out.append(f"path = {toml_str(path)}")
        out.append(f"table = {toml_str(table)}")
        element = field_description(spec, res.get("record_schema"), path)
        out.append(f"description = {toml_str(f'One row per element of {path} of {name}' + (f': {element}' if element else ''))}")
        write_columns(out, ccols,
                      describe=lambda p, path=path: field_description(spec, res.get("record_schema"), f"{path}.{p}"))
    return "\n".join(out) + "\n"


def sandbox_entry(res, by_list_path):
    """What the sandbox needs to serve the resource as the catalogue describes it."""
    list_info = res.get("list") or {}
    params = list_info.get("query_params") or []
    p_by = {p["name"]: p for p in params}
    active = None
    if "activeState" in p_by:
        active = {"param": "activeState", "default": "ActiveOnly"}
    elif "active" in p_by:
        d = p_by["active"].get("default_per_spec_text")
        active = {"param": "active", "default": d if d in ("True", "Any", "False") else "True"}
    elif "includeInactive" in p_by:
        active = {"param": "includeInactive", "default": "false"}
    elif "activeOnly" in p_by:
        active = {"param": "activeOnly", "default": "true"}
    windows = []
    for lo, hi, fld in (("modifiedOnOrAfter", "modifiedBefore", "modifiedOn"),
                        ("createdOnOrAfter", "createdBefore", "createdOn"),
                        ("submittedOnOrAfter", "submittedBefore", "submittedOn")):
        if lo in p_by:
            windows.append({"after": lo, "before": hi if hi in p_by else None, "field": fld})
    list_path = res.get("list_path") or ""
    for alt in res.get("alternative_endpoints") or []:
        if alt.get("path", "").endswith("/paginated"):
            list_path = alt["path"]
    parent = None
    if res["sync_mode"] == "per_parent":
        p, param = find_parent(res, by_list_path)
        if p:
            parent = {"resource": p["name"], "param": param}
    export = res.get("export") or {}
    export_active = any(p["name"] == "active" for p in export.get("query_params") or [])

    def field(f):
        out = {"name": f["name"], "type": f.get("type") or "string"}
        for k in ("format", "enum", "nullable"):
            if f.get(k) is not None:
                out[k] = f[k]
        if f.get("sub_fields"):
            out["fields"] = [field(s) for s in f["sub_fields"]]
        if f.get("element_fields"):
            out["elements"] = [field(s) for s in f["element_fields"]]
            for e, src in zip(out["elements"], f["element_fields"]):
                if looks_like_money(src):
                    e["money"] = True
        elif f.get("type") == "array":
            out["items"] = (f.get("items") or {}).get("type") or "string"
            if (f.get("items") or {}).get("format"):
                out["items_format"] = f["items"]["format"]
        return out

    money = money_fields(res)
    fields = []
    for f in res["fields"]:
        e = field(f)
        if f["name"] in money:
            e["money"] = True
        fields.append(e)
    if not fields:  # no schema in the spec: an id and a name, as the tap's inline schema has
        fields = [{"name": "id", "type": "integer", "format": "int64"}, {"name": "createdOn", "type": "string", "format": "date-time"},
                  {"name": "fileName", "type": "string"}]
    return {
        "name": res["name"],
        "list_path": list_path,
        "export_path": res.get("export_path"),
        "export_active": export_active,
        "response": list_info.get("response_shape") or ("none" if not list_path else "paged"),
        "active": active,
        "windows": windows,
        "ids": "ids" in p_by,
        "sort": "sort" in p_by,
        "parent": parent,
        "key": res.get("suggested_primary_key") or [],
        "size": res.get("size_class"),
        "fields": fields,
    }


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CATALOGUE
    with open(path) as f:
        catalogue = json.load(f)
    resources = catalogue["resources"]
    by_list_path = {r["list_path"]: r for r in resources if r.get("list_path")}
    written = 0
    for res in resources:
        if res["name"] in HAND_WRITTEN:
            continue
        with open(os.path.join(HERE, res["name"] + ".toml"), "w") as f:
            f.write(job_file(res, by_list_path))
        written += 1
    sandbox = [sandbox_entry(r, by_list_path) for r in resources]
    with open(os.path.join(ROOT, "src", "sandbox", "resources.json"), "w") as f:
        json.dump({"source": catalogue["meta"].get("spec_source"), "resources": sandbox}, f, indent=None,
                  separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    rows = write_readme_table()
    print(f"wrote {written} job files, src/sandbox/resources.json ({len(sandbox)} resources) "
          f"and the README's table ({rows} jobs)")


def write_readme_table():
    """The README's table of covered resources, from the job files (hand-written ones included)."""
    import tomllib
    lines = ["| job = table | mode | key | parent | children | enabled |", "| --- | --- | --- | --- | --- | --- |"]
    names = sorted(f for f in os.listdir(HERE) if f.endswith(".toml"))
    for fname in names:
        with open(os.path.join(HERE, fname), "rb") as f:
            job = tomllib.load(f)
        key = job.get("key", ["id"])
        key_text = ", ".join(key) if key else ("(parent, position)" if job.get("parent") else "position")
        children = ", ".join(c["table"] for c in job.get("children", []))
        lines.append(f"| `{job['name']}` | {job.get('mode', 'export')} | {key_text} | {job.get('parent', '')} | "
                     f"{children} | {'yes' if job.get('enabled', True) else 'no'} |")
    readme = os.path.join(ROOT, "README.md")
    with open(readme) as f:
        text = f.read()
    begin, end = "<!-- resources:begin (jobs/generate.py) -->", "<!-- resources:end -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + begin + "\n" + "\n".join(lines) + "\n" + end + tail
        with open(readme, "w") as f:
            f.write(text)
    return len(names)


if __name__ == "__main__":
    main()
