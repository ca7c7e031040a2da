"""checkov over every rendered environment (as it is, and with each optional workload on) finds nothing beyond
the accepted findings that chart/README.md lists with their reasons, and each of those is still found."""

import functools
import json
import pathlib
import subprocess
import tempfile

import pytest
import yaml

from tests.helm import CHART, ENVIRONMENTS, ROOT, environment_values, render

CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
VARIANTS = {
    "as-is": {},
    "network-policies": {"networkPolicy": {"enabled": True, "nodeCIDRs": ["10.0.0.0/16"]}},
    "fuse-daemonset": {"threefs": {"mode": "daemonset"}},
    "model-downloader": {"modelDownloader": {"enabled": True}, "worker": {"nodes": ["gpu-a"]}},
}
TABLE_MARK = "<!-- accepted findings:"


@functools.cache
def accepted():
    """{check id: set of components, "*" for any}, from the README's table."""
    text = (CHART / "README.md").read_text()
    rows = text[text.index(TABLE_MARK):].split("\n\n")[0].splitlines()[3:]
    table = {}
    for row in rows:
        check, where = (cell.strip() for cell in row.strip("|").split("|")[:2])
        table[check] = {w.strip() for w in where.split(",")}
    return table


@functools.cache
def findings(env, variant):
    """(check id, component) of each failed check in one rendering."""
    objects = render(environment_values(env), VARIANTS[variant])
    # Graph checks name a workload's pod template as a Pod with the workload's name.
    component = {o["metadata"]["name"]: o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
                 for o in objects if o["kind"] != "ConfigMap"}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = pathlib.Path(tmp) / f"{env}-{variant}.yaml"
        manifest.write_text(yaml.safe_dump_all(objects))
        done = subprocess.run([str(CHECKOV), "-f", str(manifest), "--framework", "kubernetes", "--quiet", "-o", "json"],
                              capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    found = set()
    for result in report if isinstance(report, list) else [report]:
        for check in result["results"]["failed_checks"]:
            name = check["resource"].split(".")[2]
            found.add((check["check_id"], component[name]))
    return found


def test_the_table_is_there():
    assert len(accepted()) >= 10 and all(accepted().values())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_finding_beyond_the_accepted_ones(env, variant):
    found = findings(env, variant)
    unexplained = sorted((check, where) for check, where in found
                         if not ({"*", where} & accepted().get(check, set())))
    assert not unexplained, f"findings not in chart/README.md's table: {unexplained}"


def test_every_accepted_finding_is_still_found():
    found = set().union(*(findings(env, variant) for env in ENVIRONMENTS for variant in VARIANTS))
    stale = [(check, where) for check, wheres in accepted().items() for where in wheres
             if not any(c == check and (where == "*" or w == where) for c, w in found)]
    assert not stale, f"accepted in chart/README.md but no longer found: {stale}"
