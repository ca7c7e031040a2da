"""The corpus of bad values overlays in tests/bad_values.yaml, and how an error message names a path."""

import pathlib

import yaml

CASES = yaml.safe_load(pathlib.Path(__file__).with_name("bad_values.yaml").read_text())


def names_path(message, path):
    """A rule names `a.b.c`; Helm's schema errors name `/a/b/c`, or `/a/b` and the additional property `c`."""
    parent, _, leaf = path.rpartition(".")
    slashed = "/" + path.replace(".", "/")
    return (path in message or f"'{slashed}'" in message
            or (f"'/{parent.replace('.', '/')}'" in message and f"'{leaf}'" in message)
            or (not parent and f"'{leaf}'" in message))


def case_ids(cases):
    return [case["name"] for case in cases]
