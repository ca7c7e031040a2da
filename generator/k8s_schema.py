"""JSON Schemas of the Kubernetes objects that values pass through to pods (probes, resources, tolerations,
affinity, security contexts, env), from the OpenAPI definitions kubernetes-validate ships offline, at the
chart's minimum Kubernetes version (Chart.yaml kubeVersion), in their strict form (no unknown keys)."""

import copy
import functools
import json
import pathlib
import re

import kubernetes_validate
import yaml

CHART_FILE = pathlib.Path(__file__).resolve().parent.parent / "chart" / "Chart.yaml"
CORE = "io.k8s.api.core.v1."
SHIPPED = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")


def minimum_version(chart_file=CHART_FILE):
    """The lowest Kubernetes minor the chart supports, "1.29" from kubeVersion ">=1.29.0-0"."""
    match = re.match(r"^>=\s*(\d+\.\d+)", yaml.safe_load(pathlib.Path(chart_file).read_text())["kubeVersion"])
    if not match:
        raise ValueError(f"{chart_file}: kubeVersion must start with >=MAJOR.MINOR")
    return match.group(1)


@functools.cache
def definitions(version):
    path = SHIPPED / f"v{version}.0-local-strict" / "_definitions.json"
    if not path.exists():
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version} ({path})")
    return json.loads(path.read_text())["$defs"]


def full_name(name):
    """A core/v1 kind by its short name (Probe), anything else by its full OpenAPI name."""
    return name if "." in name else CORE + name


def _rewrite_refs(node, found):
    """The node with each $ref pointed at #/definitions/<name>, collecting the names."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref":
                name = REF.match(value).group(1)
                found.add(name)
                out[key] = f"#/definitions/{name}"
            elif key.startswith("x-kubernetes-") or key == "format":
                continue  # annotations for the API server's tools; nothing Helm validates
            else:
                out[key] = _rewrite_refs(value, found)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, found) for item in node]
    return node


def schema(spec, version):
    """The schema of one values parameter from its _k8s spec, and the definitions it refers to.

    spec: "Probe", "Toleration[]" (a list of them), or {type: Probe, without: [exec, httpGet]} for an object
    whose other keys the chart sets itself."""
    found = set()
    if isinstance(spec, str):
        name, is_list = spec.removesuffix("[]"), spec.endswith("[]")
        ref = {"$ref": f"#/definitions/{full_name(name)}"}
        found.add(full_name(name))
        out = {"type": "array", "items": ref} if is_list else ref
    else:
        base = copy.deepcopy(definitions(version)[full_name(spec["type"])])
        unknown = set(spec["without"]) - set(base["properties"])
        if unknown:
            raise ValueError(f"{spec['type']} has no properties {sorted(unknown)}")
        for key in spec["without"]:
            del base["properties"][key]
        base.pop("description", None)
        out = _rewrite_refs(base, found)
    return out, _closure(found, version)


def _closure(names, version):
    """Every definition the names need, by name, refs rewritten."""
    defs, done, todo = definitions(version), {}, list(names)
    while todo:
        name = todo.pop()
        if name in done:
            continue
        found = set()
        done[name] = _rewrite_refs(defs[name], found)
        todo.extend(found - done.keys())
    return done
