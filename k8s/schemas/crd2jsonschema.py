"""Convert an upstream CustomResourceDefinition into the strict JSON schema k8s/validate.py reads.

    python k8s/schemas/crd2jsonschema.py CRD.yaml VERSION SOURCE > k8s/schemas/GROUP/KIND_VER.json

The CRD's `openAPIV3Schema` for VERSION, made strict the way the API server's strict field
validation is: every object that neither lists `additionalProperties` nor carries
`x-kubernetes-preserve-unknown-fields` rejects unknown fields; `x-kubernetes-int-or-string`
becomes integer-or-string, `nullable` adds null. Descriptions and CEL rules
(`x-kubernetes-validations`, which a JSON schema cannot check) are dropped to keep the files
small. The top level gets the same `metadata` schema as the hand-written schemas here and
`apiVersion`/`kind` constants. SOURCE (project, tag, path) goes into `$comment`; record it in
k8s/schemas/README.md too. Only PyYAML and the standard library: runs in either venv.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

NAME = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": NAME},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": NAME},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
}
DROPPED = {"description", "x-kubernetes-validations", "example", "externalDocs"}


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if k not in DROPPED}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.get("x-kubernetes-preserve-unknown-fields") is True
    if out.pop("x-kubernetes-embedded-resource", False):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if out.get("type") == "object" and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def convert(crd: dict[str, Any], version: str, source: str) -> dict[str, Any]:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = strict(served["schema"]["openAPIV3Schema"])
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"const": f"{group}/{version}"}
    props["kind"] = {"const": kind}
    props["metadata"] = METADATA
    required = ["apiVersion", "kind", "metadata"]
    required += [r for r in schema.get("required", []) if r not in required]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            f"Converted by k8s/schemas/crd2jsonschema.py from {source} "
            "(openAPIV3Schema, strict: unknown fields rejected; descriptions and CEL rules "
            "dropped). Regenerate, do not edit."
        ),
        "title": f"{kind} {group}/{version}",
        **{k: v for k, v in schema.items() if k not in ("properties", "required")},
        "required": required,
        "properties": props,
    }


def main(argv: list[str]) -> int:
    path, version, source = argv
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    (crd,) = [d for d in docs if d.get("kind") == "CustomResourceDefinition"]
    json.dump(convert(crd, version, source), sys.stdout, indent=1, sort_keys=False)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
