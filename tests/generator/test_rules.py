"""The generator rejects the bad-values corpus: by its schema, and by the chart's own rules (rendered with
Helm), and accepts every environment."""

import jsonschema
import pytest

from generator import chart_rules, environments, model, schema
from tests.bad_values import CASES, case_ids
from tests.helm import environment_values

ROOT_MODEL = model.load()
VALIDATOR = jsonschema.Draft7Validator(schema.build(ROOT_MODEL, "values"))


def merged(*layers):
    values = ROOT_MODEL.defaults()
    for layer in layers:
        values = environments.overlay(values, layer)
    return values


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "schema"],
                         ids=case_ids(c for c in CASES if c["kind"] == "schema"))
def test_schema_rejects(case):
    errors = list(VALIDATOR.iter_errors(merged(environment_values(case["base"]), case["values"])))
    assert errors
    named = {(".".join(str(p) for p in e.absolute_path), e.message) for e in errors}
    for path in case["expect"]:
        parent, _, leaf = path.rpartition(".")
        assert any(where == path or (where == parent and f"'{leaf}'" in message) for where, message in named), named


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "rule"],
                         ids=case_ids(c for c in CASES if c["kind"] == "rule"))
def test_rules_reject_naming_the_paths(case):
    values = merged(environment_values(case["base"]), case["values"])
    assert not list(VALIDATOR.iter_errors(values)), "a rule case must pass the schema"
    found = chart_rules.problems(values)
    assert found
    for path in case["expect"]:
        assert any(path in message for message in found), found


@pytest.mark.parametrize("env", environments.load_all(), ids=lambda e: e.name)
def test_environments_pass_schema_and_rules(env):
    values = merged(env.values)
    assert not list(VALIDATOR.iter_errors(values))
    assert chart_rules.problems(values) == []
