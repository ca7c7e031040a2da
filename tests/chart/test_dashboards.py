"""The Grafana dashboards (chart/files/dashboards/<name>-<line>.json, generated from generator/observability.yaml) as
the chart ships them: ConfigMaps for Grafana's sidecar, each release line's queries parsed by promtool."""

import json

import pytest

from generator.environments import overlay
from testbed import prometheus
from testbed.helm import chart_defaults
from tests.chart.test_alerts import ENVIRONMENTS, LINES, check
from tests.helm import NAMESPACE, environment_values, find, one, render

ON = {"metrics": {"dashboards": {"enabled": True}}}


def dashboards(*values, env="ipoib"):
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o
            for o in find(render(environment_values(env), ON, *values), "ConfigMap")
            if o["metadata"]["labels"]["app.kubernetes.io/component"].startswith("dashboard-")}


def board(configmap):
    (content,) = configmap["data"].values()
    return json.loads(content)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_ships_its_dashboards_for_grafana_s_sidecar(env):
    values = overlay(chart_defaults(), environment_values(env))
    found = dashboards(env=env)
    kvbm = values["kvbm"]["metrics"]["enabled"] or any(
        group.get("kvbm", {}).get("metrics", {}).get("enabled") for group in values["worker"]["groups"].values())
    assert set(found) == {"dashboard-serving"} | ({"dashboard-kvbm"} if kvbm else set())
    line = values["dynamo"]["release"]
    for name, configmap in found.items():
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert list(configmap["data"]) == [f"{name.removeprefix('dashboard-')}-{line}.json"]
        assert board(configmap)["title"].endswith(f"({line})")


def test_the_sidecar_s_label_namespace_and_annotations_are_values():
    values = {"metrics": {"dashboards": {"label": "grafana.example/dashboard", "labelValue": "yes",
                                         "namespace": "monitoring", "annotations": {"grafana_folder": "Dynamo"}}}}
    configmap = dashboards(values)["dashboard-serving"]
    assert configmap["metadata"]["labels"]["grafana.example/dashboard"] == "yes"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Dynamo"}


def test_no_dashboard_without_its_switch_nor_a_kvbm_one_without_kvbm_s_metrics():
    assert not dashboards({"metrics": {"dashboards": {"enabled": False}}})
    assert set(dashboards({"kvbm": {"metrics": {"enabled": False}}})) == {"dashboard-serving"}


@pytest.mark.parametrize("line", LINES)
def test_every_query_parses(line, tmp_path):
    found = dashboards({"dynamo": {"release": line}})
    queries = [q for configmap in found.values() for _, q in prometheus.dashboard_queries(board(configmap), NAMESPACE)]
    assert len(queries) >= 20
    status, out = check(tmp_path, prometheus.as_recording_rules(queries))
    assert status == 0 and f"SUCCESS: {len(queries)} rules found" in out, out


def test_dashboards_choose_a_data_source_and_a_namespace():
    serving = board(dashboards()["dashboard-serving"])
    variables = {v["name"]: v for v in serving["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "label_values(dynamo_frontend_requests_total, namespace)" in variables["namespace"]["definition"]
    assert variables["model"]["includeAll"] and variables["model"]["allValue"] == ".*"
    for panel in serving["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all('namespace="$namespace"' in t["expr"] for t in panel["targets"]), panel["title"]


def test_one_uid_per_dashboard_and_line():
    uids = [board(c)["uid"] for line in LINES for c in dashboards({"dynamo": {"release": line}}).values()]
    assert len(uids) == len(set(uids)) == 4
    assert one(render(environment_values("ipoib"), ON), "ConfigMap", "dashboard-serving")
