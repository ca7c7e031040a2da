"""Where the repository, its chart and the Helm binaries of `make tools` are, the values of an environment
as values/ holds them, and the chart rendered with real Helm through pyhelm3."""

import asyncio
import functools
import json
import pathlib

import pyhelm3
import yaml

from generator.environments import overlay

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"
RELEASE = "dynamo"
NAMESPACE = "dynamo-test"


def helm_executable(major):
    """The helm binary of one major version, installed by `make tools`."""
    path = ROOT / ".tools" / "bin" / f"helm{major}"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make tools`")
    return str(path)


def environment_values(env):
    return yaml.safe_load((ROOT / "values" / f"{env}.yaml").read_text()) or {}


def chart_defaults():
    """The chart's default values (chart/values.yaml)."""
    return yaml.safe_load((CHART / "values.yaml").read_text())


@functools.cache
def _client(major):
    return pyhelm3.Client(executable=helm_executable(major))


@functools.lru_cache(maxsize=256)
def _render_cached(major, values_json):
    async def run():
        client = _client(major)
        chart = await client.get_chart(CHART)
        return list(await client.template_resources(chart, RELEASE, json.loads(values_json), namespace=NAMESPACE))

    return tuple(doc for doc in asyncio.run(run()) if doc)


def render(*values, major=4):
    """Render the chart with the given values dicts layered in order; return the objects (fresh copies)."""
    merged = functools.reduce(overlay, values, {})
    docs = _render_cached(major, json.dumps(merged, sort_keys=True))
    return json.loads(json.dumps(docs))


def find(objects, kind, component=None):
    """Objects of one kind, optionally of one app.kubernetes.io/component."""
    found = [
        o for o in objects
        if o["kind"] == kind
        and (component is None or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)
    ]
    return found


def one(objects, kind, component=None):
    found = find(objects, kind, component)
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
    return found[0]
