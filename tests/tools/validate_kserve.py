"""Validate KServe manifests against the KServe SDK's models of its CRDs (and the Kubernetes client's, which they use).

    .venv-kserve/bin/python tests/tools/validate_kserve.py deploy/kserve/*.yaml     # make test builds .venv-kserve

Runs in its own environment with the ``kserve`` package (pinned in the Makefile), whose generated models describe
each resource's fields: every field must be one the model names (no unknown or misspelt keys), every value of the
model's type, and every required field present (the models' own client-side validation). Prints one line per
problem and exits 1 if there is any.
"""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path

import kserve.models as kserve_models
import kubernetes.client.models as kubernetes_models
import yaml

KINDS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),  # IntOrString, quantities given as either, free-form status
    "date": (str, date),
    "datetime": (str, datetime),
}


def model_class(name: str) -> type:
    cls = getattr(kserve_models, name, None) or getattr(kubernetes_models, name, None)
    if cls is None:
        raise KeyError(f"no model named {name}")
    return cls


def build(value: object, type_name: str, path: str, problems: list[str]) -> object:
    """``value`` as an instance of ``type_name`` (a model or an openapi-generator type string), noting problems."""
    if value is None:
        return None
    # KServe's models write list[X] and dict(str, X); the Kubernetes client's (pydantic) List[X] and Dict[str, X].
    if type_name.startswith(("list[", "List[")):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list ({type_name}), got {type(value).__name__}")
            return None
        return [build(v, type_name[5:-1], f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if type_name.startswith(("dict(", "Dict[")):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping ({type_name}), got {type(value).__name__}")
            return None
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return {k: build(v, inner, f"{path}.{k}", problems) for k, v in value.items()}
    if type_name in PRIMITIVES:
        allowed = PRIMITIVES[type_name]
        if not isinstance(value, allowed) or (type_name in ("int", "float") and isinstance(value, bool)):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return value
    cls = model_class(type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} mapping, got {type(value).__name__}")
        return None
    attribute_of = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs = {}
    for key, v in value.items():
        if key not in attribute_of:
            problems.append(f"{path}.{key}: not a field of {type_name} (fields: {', '.join(sorted(attribute_of))})")
            continue
        attr = attribute_of[key]
        kwargs[attr] = build(v, cls.openapi_types[attr], f"{path}.{key}", problems)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a required field missing, or a value the model refuses (pydantic's errors too)
        problems.append(f"{path}: {type_name}: " + " ".join(str(exc).split()))
        return None


def validate(document: dict) -> list[str]:
    kind = (document.get("apiVersion"), document.get("kind"))
    if kind not in KINDS:
        return [f"{kind}: not a KServe kind this checks ({', '.join(k for _, k in KINDS)})"]
    problems: list[str] = []
    build(document, KINDS[kind], kind[1], problems)
    return problems


def main() -> int:
    failed = False
    for path in map(Path, sys.argv[1:]):
        for document in (d for d in yaml.safe_load_all(path.read_text()) if d):
            problems = validate(document)
            for problem in problems:
                print(f"{path}: {problem}")
            failed |= bool(problems)
            if not problems:
                print(f"{path}: {document['kind']} {document['metadata']['name']} valid for kserve {kserve_version()}")
    return 1 if failed else 0


def kserve_version() -> str:
    from importlib.metadata import version

    return version("kserve")


if __name__ == "__main__":
    sys.exit(main())
