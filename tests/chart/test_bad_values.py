"""Every overlay of the bad-values corpus is rejected by `helm template` with the offending value paths."""

import pytest

from tests.bad_values import CASES, case_ids, names_path
from tests.helm import environment_values, render, render_error


def test_corpus_covers_schema_and_rules():
    assert len(CASES) >= 40
    assert {case["kind"] for case in CASES} == {"schema", "rule"}


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_rejected_naming_the_field(case, helm_major):
    message = render_error(environment_values(case["base"]), case["values"], major=helm_major)
    for path in case["expect"]:
        assert names_path(message, path), f"{path} not named in:\n{message}"
    if case["kind"] == "rule":
        assert "VALUES VALIDATION:" in message
    else:
        assert "don't meet the specifications of the schema" in message


@pytest.mark.parametrize("env", ["ipoib", "standalone"])
def test_all_problems_reported_at_once(env):
    bad = [c for c in CASES if c["kind"] == "rule" and c["base"] == env][:3]
    merged = {}
    for case in bad:
        merged = {**merged, **{k: {**merged.get(k, {}), **v} for k, v in case["values"].items()}}
    message = render_error(environment_values(env), merged)
    assert message.count("\n") >= 3


@pytest.mark.parametrize("env", ["ipoib", "standalone"])
def test_good_environments_are_accepted(env, helm_major):
    assert render(environment_values(env), major=helm_major)
