"""Render the chart with real Helm binaries through pyhelm3, and run the helm commands pyhelm3 lacks."""

import subprocess

import pyhelm3
import yaml

# What the tests import from here, rendering and finding objects included, lives in testbed/helm.py.
from testbed.helm import (  # noqa: F401
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    environment_values,
    find,
    helm_executable,
    one,
    render,
)

ENVIRONMENTS = sorted(p.stem for p in (ROOT / "values").glob("*.yaml"))
HELM_MAJORS = (3, 4)


def render_error(*values, major=4):
    """Render expecting failure; return Helm's error message."""
    try:
        render(*values, major=major)
    except pyhelm3.errors.Error as err:
        return str(err)
    raise AssertionError("rendering succeeded, expected an error")


def helm(major, *args, check=True):
    """Run a helm command directly (lint, template flags pyhelm3 does not pass)."""
    return subprocess.run([helm_executable(major), *args], capture_output=True, text=True, timeout=120, check=check)


def pod_spec(obj):
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def containers(obj):
    """Every container of a workload, init containers first."""
    spec = pod_spec(obj)
    return spec.get("initContainers", []) + spec["containers"]


def container(obj, name):
    matches = [c for c in containers(obj) if c["name"] == name]
    assert matches, f"no container {name} in {obj['kind']} {obj['metadata']['name']}"
    return matches[0]


def env_of(c):
    """A container's plain env values by name (valueFrom entries map to their source dict)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}


def workloads(objects):
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def node_cleanup_job(objects):
    """The per-node cleanup Job the post-delete Job creates, as the chart renders it into a ConfigMap."""
    return yaml.safe_load(one(objects, "ConfigMap", "cleanup-node")["data"]["job.yaml"])


def with_embedded(objects):
    """The objects, plus the manifests the chart embeds in ConfigMaps for its hooks to create."""
    embedded = [node_cleanup_job(objects)] if find(objects, "ConfigMap", "cleanup-node") else []
    return objects + embedded


def peers_of(args):
    """{name: (source, check)} of the --etcd/--nats descriptions, as dynamo-hooks itself parses the args:
    source is ("service", namespace, name, port name, port, embedded) or ("explicit", *addresses)."""
    from dynamo_hooks import cli

    parsed = cli.build_parser().parse_args(args)
    found = {}
    for conn in cli.peers(parsed):
        source = ("service", *conn.service, conn.embedded) if conn.service else ("explicit", *conn.explicit)
        found[conn.name] = (source, conn.check)
    return found
