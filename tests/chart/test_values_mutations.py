"""Every value is typed: a key-agnostic mutation of each environment's values (the chart's defaults under it),
an unknown key in every object and a wrong-shaped value at every leaf, is refused by Helm's schema check,
each at its own path. The mutations are applied all at once per kind, and each must be named in the errors."""

import copy

import pytest

from generator.environments import overlay
from testbed.helm import chart_defaults
from tests.helm import ENVIRONMENTS, environment_values, render_error

UNKNOWN = "mutationUnknownKey"
# Maps whose keys are the user's, not the chart's (their values are typed all the same): labels, annotations
# and selectors, resource names, group names; and TRT-LLM's engine configuration, whose keys beyond those the
# chart knows TRT-LLM checks at the worker's start (its schema is not available offline).
FREE_KEYS = {"commonLabels", "podLabels", "podAnnotations", "labels", "annotations", "nodeSelector", "matchLabels",
             "limits", "requests", "groups", "engine", "extraEngineArgs"}
WRONG = {"wrong": "shape"}  # an object: wrong wherever a scalar or a list belongs


def walk(node, path=()):
    """(path, node) of every value below node, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, path + (i,))


def set_at(values, path, value):
    values_at(values, path[:-1])[path[-1]] = value


def pointer(path):
    """The JSON pointer Helm names a value by (RFC 6901: ~ and / in a key escaped)."""
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def unknown_keys(values):
    """Every object that is not a free map gets an unknown key; the paths of those objects."""
    mutated, paths = copy.deepcopy(values), []
    for path, node in walk(values):
        if isinstance(node, dict) and path and not (set(path) & FREE_KEYS):
            paths.append(path)
    for path in paths:
        values_at(mutated, path)[UNKNOWN] = 1
    return mutated, paths


def wrong_leaves(values):
    """Every leaf (a scalar, an empty list or map, a list of scalars) gets a value of another shape."""
    mutated, paths = copy.deepcopy(values), []
    for path, node in walk(values):
        if not path:
            continue
        if isinstance(node, dict) and node or isinstance(node, list) and any(isinstance(i, (dict, list)) for i in node):
            continue
        if not any(path[:i] in paths for i in range(len(path))):
            paths.append(path)  # not the items of a list of scalars, which is itself a leaf
    for path in paths:
        set_at(mutated, path, "wrong" if isinstance(values_at(values, path), (dict, list)) else WRONG)
    return mutated, paths


def values_at(values, path):
    for key in path:
        values = values[key]
    return values


def errors_named(message):
    """The paths Helm names, with what it says of each."""
    return {line.split("'")[1]: line for line in message.splitlines() if line.lstrip().startswith("- at '")}


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("mutation", [unknown_keys, wrong_leaves])
def test_every_mutation_is_refused_at_its_path(env, mutation, helm_major):
    values = overlay(chart_defaults(), environment_values(env))
    mutated, paths = mutation(values)
    assert len(paths) > 50, "the walk reached the values"
    named = errors_named(render_error(mutated, major=helm_major))
    missing = [pointer(p) for p in paths if pointer(p) not in named]
    assert not missing, f"{len(missing)} of {len(paths)} mutations not refused at their path: {missing}"
    if mutation is unknown_keys:
        assert all(UNKNOWN in named[pointer(p)] for p in paths)
