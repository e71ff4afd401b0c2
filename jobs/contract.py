#!/usr/bin/env python3
"""Writes src/sandbox/contract.json: the query parameters of every operation of ServiceTitan's
official OpenAPI specs (name, type, format, required, enum, maximum — from the schema or stated in
the text, as "Maximum value is 500" —, array item types) and their documented error statuses.
The sandbox enforces it on every request, as the real API does (issue 19).

    jobs/contract.py [SPECS_DIR]   (default: ../shared/servicetitan/openapi next to the checkout)
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "servicetitan", "openapi")


def schema_of(spec, schema):
    while isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        schema = spec.get("components", {}).get("schemas", {}).get(name, {})
    return schema or {}


def param_entry(spec, p):
    s = schema_of(spec, p.get("schema", {}))
    if "oneOf" in s or "allOf" in s:
        parts = s.get("oneOf") or s.get("allOf")
        s = schema_of(spec, parts[0]) if parts else {}
    out = {"name": p["name"], "type": s.get("type", "string")}
    if s.get("format"):
        out["format"] = s["format"]
    if p.get("required"):
        out["required"] = True
    if s.get("enum"):
        out["enum"] = [str(e) for e in s["enum"]]
    maximum = s.get("maximum")
    m = re.search(r"[Mm]aximum value is (\d+)", p.get("description", "") or "")
    if maximum is None and m and p["name"] == "pageSize":
        maximum = int(m.group(1))
    if maximum is not None:
        out["maximum"] = maximum
    if s.get("type") == "array":
        items = schema_of(spec, s.get("items", {}))
        out["items"] = items.get("type", "string")
        if items.get("format"):
            out["items_format"] = items["format"]
    return out


def one_of(text):
    """A filter combination the text requires ("Either CustomerIds, modifiedOn or modifiedOnOrAfter
    parameter must be specified"): the names as written, and the sentence as the message."""
    m = re.search(r"Either ([A-Za-z, ]+?) parameters? must be specified\.?", text)
    if not m:
        return None
    names = [n.strip() for n in re.split(r",| or ", m.group(1)) if n.strip()]
    return {"names": names, "message": m.group(0).rstrip(".") + "."}


def main():
    operations = []
    for name in sorted(os.listdir(SPECS)):
        if not name.endswith(".json"):
            continue
        spec = json.load(open(os.path.join(SPECS, name)))
        prefix = spec["servers"][0]["url"].split(".servicetitan.io/", 1)[1].strip("/")
        for path, ops in sorted(spec.get("paths", {}).items()):
            shared = ops.get("parameters", [])
            for method, op in sorted(ops.items()):
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                params = [param_entry(spec, p) for p in shared + op.get("parameters", []) if p.get("in") == "query"]
                errors = sorted(int(code) for code in op.get("responses", {}) if code.isdigit() and int(code) >= 400)
                entry = {"module": name[:-5], "method": method.upper(), "path": prefix + path, "params": params,
                         "errors": errors}
                rule = one_of(op.get("description", "") or op.get("summary", "") or "")
                if rule:
                    entry["one_of"] = rule
                operations.append(entry)
    out = {
        "source": "ServiceTitan's OpenAPI 3.0.1 specs (24 modules) as archived in archdotdev/tap-service-titan "
                  "@0001e25 (spec files refreshed in commit 80da1cb, 2026-03-05), "
                  "tap_service_titan/openapi_specs/*.json; extracted by jobs/contract.py",
        "operations": operations,
    }
    target = os.path.join(ROOT, "src", "sandbox", "contract.json")
    with open(target, "w") as f:
        json.dump(out, f, separators=(",", ":"), sort_keys=False)
        f.write("\n")
    print(f"{target}: {len(operations)} operations")


main()
