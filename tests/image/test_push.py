"""`make push` to a real OCI registry: the chart and the hooks image side by side, and a chart installed
from there names an image the registry serves (Helm 3 and Helm 4)."""

import json
import subprocess

import pytest
import yaml

from tests.helm import ROOT, containers, helm, workloads
from tests.image.conftest import IMAGE, chart_version
from tests.publish.registry import pushed as registry_pushed

VERSION = chart_version()


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """The registry's host:port, once `make push` has pushed the chart and the image there."""
    with registry_pushed(tmp_path_factory.mktemp("registry"), "push") as (address, _):
        yield address


def inspect(reference):
    done = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{reference}"],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_image_is_in_the_registry(pushed):
    info = inspect(f"{pushed}/{IMAGE}:{VERSION}")
    assert info["Labels"]["org.opencontainers.image.version"] == VERSION
    assert info["Labels"]["org.opencontainers.image.title"] == IMAGE
    assert len(info["Layers"]) >= 2


def test_chart_from_the_registry_runs_the_pushed_image(pushed, helm_major):
    out = helm(helm_major, "template", "dynamo", f"oci://{pushed}/charts/dynamo-offloading", "--version", VERSION,
               "--plain-http", "-f", str(ROOT / "values" / "ipoib.yaml"),
               "--set", f"hooks.image.registry={pushed}").stdout
    objects = [o for o in yaml.safe_load_all(out) if o]
    images = {c["image"] for o in workloads(objects) for c in containers(o)
              if c["name"] in ("pre-install", "cleanup", "resolve")}
    assert images == {f"{pushed}/{IMAGE}:{VERSION}"}
    [image] = images
    assert inspect(image)["Digest"].startswith("sha256:")
