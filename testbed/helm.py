"""Where the repository, its chart and the Helm binaries of `make tools` are, and the values of an
environment as values/ holds them."""

import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"


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
