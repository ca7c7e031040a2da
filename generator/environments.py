"""Environment specs (generator/environments/<env>.yaml): what one environment changes from the defaults."""

import dataclasses
import pathlib

import yaml

SPEC_DIR = pathlib.Path(__file__).with_name("environments")


@dataclasses.dataclass
class Environment:
    name: str
    description: str
    install: str
    values: dict
    notes: dict


def overlay(base, override):
    """`override` merged over `base` as Helm merges values files: maps deep, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_all(spec_dir=SPEC_DIR):
    environments = []
    for path in sorted(pathlib.Path(spec_dir).glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        unknown = set(spec) - {"description", "install", "values", "notes"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        environments.append(Environment(path.stem, spec["description"].strip(), spec["install"].strip(),
                                        spec.get("values") or {}, spec.get("notes") or {}))
    return environments
