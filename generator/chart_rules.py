"""The chart's cross-field rules (chart/templates/_validate.tpl), applied by rendering the chart with Helm
through pyhelm3: the chart is their one home, since users who run `helm install` without this generator
must get them too."""

import asyncio
import logging
import pathlib
import shutil

import pyhelm3

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"
MARKER = "VALUES VALIDATION:"  # the start of the chart's message (validateValues)
HELM_HINT = "Use --debug flag"  # a line Helm adds after a failed template

logging.getLogger("pyhelm3").setLevel(logging.ERROR)  # a failed render is an answer here, not a warning


def helm_executable():
    """The Helm that `make tools` installs, else one on PATH."""
    installed = ROOT / ".tools" / "bin" / "helm"
    found = str(installed) if installed.exists() else shutil.which("helm")
    if not found:
        raise RuntimeError("helm is missing: run `make tools`")
    return found


def render(values):
    """The chart's objects for `values` (a complete values dict), rendered with Helm."""
    async def run():
        client = pyhelm3.Client(executable=helm_executable())
        chart = await client.get_chart(CHART)
        return [doc for doc in await client.template_resources(chart, "release", values, namespace="default") if doc]

    return asyncio.run(run())


def problems(values):
    """The rule messages the chart fails with for `values` (a complete values dict), [] when it renders."""
    try:
        render(values)
    except pyhelm3.errors.Error as err:
        text = str(err)
        if MARKER not in text:
            return [f"helm template failed: {text.strip()}"]
        lines = (line.strip() for line in text.split(MARKER, 1)[1].splitlines())
        return [line for line in lines if line and not line.startswith(HELM_HINT)]
    return []


