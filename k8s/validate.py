"""Strict schema validation of rendered manifests, offline.

    .venv-k8s/bin/python k8s/validate.py RENDERED.yaml [...]    (tests/k8s/test_k8s.py runs it)

Built-in kinds: kubernetes-validate's bundled OpenAPI schemas for one Kubernetes version,
in strict mode (unknown fields are errors, as with `kubectl apply --validate=strict`).
Custom resources: the JSON schemas in k8s/schemas/ (Prometheus Operator and KEDA,
hand-written; RabbitmqCluster, the Topology Operator's Vhost/User/Permission/Policy,
CloudNativePG's Cluster/Pooler/ScheduledBackup, the Barman Cloud Plugin's ObjectStore and
Gateway API's Gateway/HTTPRoute, converted from the operators' CRDs: k8s/schemas/README.md),
which are strict too. A kind with no schema in either place is an error, never skipped.

Prints one JSON object: {"checked": [[file, kind, name, schema], ...],
"errors": [[file, kind, name, message], ...]}; exits 1 when there are errors.
Runs in .venv-k8s, where jsonschema and kubernetes-validate live (the app's mypy sees
neither: hence the type-ignores on their imports).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, import-not-found, unused-ignore]
import kubernetes_validate.utils as kv  # type: ignore[import-not-found, unused-ignore]
import yaml

KUBERNETES_VERSION = "1.37"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# kubernetes-validate re-reads its (large) definitions file for every document.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)


def crd_schema_path(api_version: str, kind: str) -> Path | None:
    if "/" not in api_version:
        return None
    group, version = api_version.split("/", 1)
    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    return path if path.is_file() else None


@functools.cache
def crd_validator(path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate_doc(doc: dict[str, Any]) -> tuple[str, list[str]]:
    """(schema used, error messages) for one manifest."""
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    crd = crd_schema_path(api_version, kind)
    if crd is not None:
        validator = crd_validator(crd)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        return (
            str(crd.relative_to(SCHEMAS.parent.parent)),
            [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors],
        )
    schema = f"kubernetes-validate {KUBERNETES_VERSION} strict"
    try:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    except kv.SchemaNotFoundError as exc:
        return "none", [f"no schema for {api_version} {kind}: {exc.message}"]
    except kv.ValidationError as exc:
        return schema, [f"{'/'.join(map(str, exc.absolute_path)) or '<root>'}: {exc.message}"]
    return schema, []


def main(paths: list[str]) -> int:
    checked: list[list[str]] = []
    errors: list[list[str]] = []
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if not doc:
                continue
            kind = doc.get("kind", "?")
            name = (doc.get("metadata") or {}).get("name", "?")
            schema, problems = validate_doc(doc)
            checked.append([path, kind, name, schema])
            errors.extend([path, kind, name, p] for p in problems)
    json.dump({"checked": checked, "errors": errors}, sys.stdout, indent=1)
    print()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
