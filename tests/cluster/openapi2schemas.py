#!/usr/bin/env python3
"""Turns a kube-apiserver's /openapi/v2 document into standalone JSON schemas for kubeconform.

    openapi2schemas.py OPENAPI_JSON OUT_DIR

One file per group/version/kind, named `<kind>_<version>_<group>.json` (all lower case; the
core group is written as its version, matching kubeconform's `{{ .Group }}` for `v1`), for
`-schema-location 'OUT_DIR/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}_{{ .Group }}.json'`.

Schemas are strict (objects with declared properties reject unknown ones, as the API server's
strict field validation does), every value may be null (manifests often say `foo: null`), and
quantities / int-or-string accept numbers or strings. References are inlined; a recursive one
(JSONSchemaProps inside CRDs) is cut to an open schema.
"""
import copy
import json
import os
import sys

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"


def nullable(schema):
    t = schema.get("type")
    if isinstance(t, str):
        schema["type"] = [t, "null"]
    return schema


def convert(node, defs, stack):
    if isinstance(node, list):
        return [convert(n, defs, stack) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name == QUANTITY:
            return {"oneOf": [{"type": ["string", "null"]}, {"type": "number"}]}
        if name == INT_OR_STRING:
            return {"oneOf": [{"type": ["string", "null"]}, {"type": "integer"}]}
        if name in stack:
            return {}
        return convert(defs[name], defs, stack | {name})
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        return {"oneOf": [{"type": ["string", "null"]}, {"type": "integer"}]}
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: convert(v, defs, stack) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not"):
            out[key] = convert(value, defs, stack)
        elif key.startswith("x-kubernetes-") or key == "description":
            continue
        else:
            out[key] = copy.deepcopy(value)
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return nullable(out)


def main():
    source, out_dir = sys.argv[1], sys.argv[2]
    with open(source) as f:
        defs = json.load(f)["definitions"]
    os.makedirs(out_dir, exist_ok=True)
    written = 0
    for name, definition in defs.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
            schema = convert(definition, defs, {name})
            schema["$schema"] = "http://json-schema.org/schema#"
            file = f"{kind}_{version}_{group or version}.json".lower()
            with open(os.path.join(out_dir, file), "w") as f:
                json.dump(schema, f)
            written += 1
    print(f"wrote {written} schemas to {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
