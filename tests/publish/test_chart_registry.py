"""`make push-chart` to a real OCI registry, then the chart installed from it by Helm 3 and Helm 4."""

import subprocess
import tarfile

import pytest
import yaml

from tests.helm import ROOT, containers, helm, workloads
from tests.publish.registry import pushed as registry_pushed

VERSION = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())["version"]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """The registry's host:port, once `make push-chart` has pushed the chart there."""
    # A package directory of its own: tests running beside it package the chart too.
    dist = tmp_path_factory.mktemp("dist")
    with registry_pushed(tmp_path_factory.mktemp("registry"), "push-chart", f"DIST={dist}") as (address, output):
        assert f"Pushed: {address}/charts/dynamo-offloading:{VERSION}" in output
        yield address


def reference(address):
    return f"oci://{address}/charts/dynamo-offloading"


@pytest.mark.parametrize("target", ["push", "push-chart", "push-image"])
def test_push_needs_a_registry_and_builds_nothing_without_one(target, tmp_path):
    done = subprocess.run(["make", "-s", target, f"DIST={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert done.stdout.strip() == f"make {target}: set REGISTRY=host:port"
    assert list(tmp_path.iterdir()) == []


def test_show_chart(pushed, helm_major):
    chart = yaml.safe_load(helm(helm_major, "show", "chart", reference(pushed), "--version", VERSION,
                                "--plain-http").stdout)
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("dynamo-offloading", VERSION, VERSION)


def test_pull(pushed, helm_major, tmp_path):
    helm(helm_major, "pull", reference(pushed), "--version", VERSION, "--plain-http", "--destination", str(tmp_path))
    with tarfile.open(tmp_path / f"dynamo-offloading-{VERSION}.tgz") as package:
        assert "dynamo-offloading/values.schema.json" in package.getnames()


def test_template_from_the_registry_names_its_hooks_image(pushed, helm_major):
    """A user sets only the registry: the hook Jobs and the resolve sidecar pull the image pushed beside the chart."""
    out = helm(helm_major, "template", "dynamo", reference(pushed), "--version", VERSION, "--plain-http",
               "-f", str(ROOT / "values" / "ipoib.yaml"), "--set", f"hooks.image.registry={pushed}").stdout
    objects = [o for o in yaml.safe_load_all(out) if o]
    images = {c["image"] for o in workloads(objects) for c in containers(o)
              if c["name"] in ("pre-install", "cleanup", "resolve")}
    assert images == {f"{pushed}/dynamo-offloading-hooks:{VERSION}"}
