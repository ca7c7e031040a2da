"""What hand-written files must agree on with each other and with the values model: one version for the
chart, its appVersion, the hooks package and the hooks image; and Chart.yaml's image list."""

import tomllib

import yaml

HOOKS_IMAGE = "dynamo-offloading-hooks"


def model_images(defaults, version, dynamo_images):
    """[{name, image}] of every image the chart runs by default, as Artifact Hub lists them; `dynamo_images` are
    the Dynamo runtime images of its release lines (the chart picks the tag by line)."""
    def ref(image):
        return f"{image['repository']}:{image['tag'] or version}"
    runtime = [{"name": "tensorrtllm-runtime", "image": image} for image in dynamo_images]
    return [{"name": HOOKS_IMAGE, "image": f"{HOOKS_IMAGE}:{defaults['hooks']['image']['tag'] or version}"},
            *runtime,
            {"name": "etcd", "image": ref(defaults["etcd"]["embedded"]["image"])},
            {"name": "nats", "image": ref(defaults["nats"]["embedded"]["image"])},
            {"name": "curl", "image": ref(defaults["tests"]["image"])}]


def problems(chart, hooks_pyproject_text, defaults, dynamo_images):
    """Messages for each disagreement; `chart` is Chart.yaml's content."""
    version = str(chart["version"])
    found = []
    if str(chart.get("appVersion")) != version:
        found.append(f"chart/Chart.yaml: appVersion {chart.get('appVersion')!r} differs from version {version!r}")
    hooks_version = tomllib.loads(hooks_pyproject_text)["project"]["version"]
    if hooks_version != version:
        found.append(f"hooks/pyproject.toml: version {hooks_version!r} differs from the chart's {version!r}")
    listed = yaml.safe_load(chart.get("annotations", {}).get("artifacthub.io/images") or "[]")
    expected = model_images(defaults, version, dynamo_images)
    if listed != expected:
        found.append(f"chart/Chart.yaml: artifacthub.io/images lists {listed}, the defaults run {expected}")
    return found
