"""The chart's version, appVersion, hooks package version and Artifact Hub image list agree."""

import copy

import yaml

from generator import consistency, model
from generator.outputs import ROOT, chart_metadata, dynamo_images

PYPROJECT = (ROOT / "hooks" / "pyproject.toml").read_text()
ROOT_SECTION = model.load()
DEFAULTS = ROOT_SECTION.defaults()
IMAGES = dynamo_images(ROOT_SECTION)


def test_each_release_line_runs_its_own_runtime_image():
    assert IMAGES == ["nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:0.9.0",
                      "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:1.6.0"]


def test_the_committed_files_agree():
    assert consistency.problems(chart_metadata(), PYPROJECT, DEFAULTS, IMAGES) == []


def test_app_version_must_be_the_chart_version():
    chart = {**chart_metadata(), "appVersion": "0.9.0"}
    assert consistency.problems(chart, PYPROJECT, DEFAULTS, IMAGES) == [
        "chart/Chart.yaml: appVersion '0.9.0' differs from version '0.1.0'"]


def test_hooks_package_version_must_be_the_chart_version():
    found = consistency.problems(chart_metadata(), PYPROJECT.replace('version = "0.1.0"', 'version = "0.2.0"'),
                                 DEFAULTS, IMAGES)
    assert found == ["hooks/pyproject.toml: version '0.2.0' differs from the chart's '0.1.0'"]


def test_image_list_follows_the_defaults():
    defaults = copy.deepcopy(DEFAULTS)
    defaults["tests"]["image"]["tag"] = "9.9.9"
    [message] = consistency.problems(chart_metadata(), PYPROJECT, defaults, IMAGES)
    assert "artifacthub.io/images" in message and "curlimages/curl:9.9.9" in message
    [message] = consistency.problems(chart_metadata(), PYPROJECT, DEFAULTS, IMAGES[:1])
    assert "tensorrtllm-runtime:1.6.0" in message
    listed = yaml.safe_load(chart_metadata()["annotations"]["artifacthub.io/images"])
    assert {"name": "dynamo-offloading-hooks", "image": "dynamo-offloading-hooks:0.1.0"} in listed
