"""The PrometheusRule (chart/files/rules-<line>.yaml filled in by chart/templates/monitoring/prometheusrule.yaml):
promtool's check of every environment's rules, and promtool's rule unit tests, in which each alert fires on
synthetic series shaped like those the frontend, the workers, KVBM and the kubelet export, and resolves."""

import re

import pytest
import yaml

from testbed import prometheus
from tests.helm import NAMESPACE, environment_values, find, one, render

ENVIRONMENTS = ("ipoib", "ipoib-kubernetes", "scale-out", "standalone")
LINES = ("0.9", "1.6")
ON = {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                  "prometheusRule": {"enabled": True, "runbookUrl": "https://charts.example/dynamo-offloading"}}}
FRONTEND = f'namespace="{NAMESPACE}",job="dynamo-dynamo-offloading-frontend"'
WORKER = f'namespace="{NAMESPACE}",job="{NAMESPACE}/dynamo-dynamo-offloading-worker"'
POD = "dynamo-dynamo-offloading-worker-0"
MODEL = "Qwen/Qwen3-8B"  # values/ipoib.yaml's


def rules(line, *more, env="ipoib"):
    return one(render(environment_values(env), ON, {"dynamo": {"release": line}}, *more), "PrometheusRule")


def alerts(rule):
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def check(tmp_path, groups):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(groups))
    return prometheus.promtool("check", "rules", path)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_s_rules_pass_promtool(env, tmp_path):
    line = environment_values(env).get("dynamo", {}).get("release", "0.9")
    status, out = check(tmp_path, prometheus.rule_groups(rules(line, env=env)))
    assert status == 0 and "SUCCESS" in out, out


@pytest.mark.parametrize("line", LINES)
def test_promtool_refuses_a_broken_rule(line, tmp_path):
    """Not vacuous: promtool fails a rules file with an expression that does not parse."""
    groups = prometheus.rule_groups(rules(line))
    groups["groups"][0]["rules"][0]["expr"] += " +"
    status, out = check(tmp_path, groups)
    assert status != 0 and "parse" in out, out


def test_alerts_follow_the_environment():
    """Per group alerts name each group's model; 3FS and KVBM alerts come only where they apply."""
    scale_out = alerts(rules("0.9", env="scale-out"))
    groups = environment_values("scale-out")["worker"]["groups"]
    missing = [r for group in rules("0.9", env="scale-out")["spec"]["groups"] for r in group["rules"]
               if r["alert"] == "DynamoModelWithoutWorker"]
    assert sorted(r["labels"]["worker_group"] for r in missing) == sorted(groups)
    assert {r["labels"]["model"] for r in missing} == {g["model"]["repoId"] for g in groups.values()}
    assert "DynamoModelWithoutWorker" in scale_out
    no_kvbm = alerts(rules("0.9", {"kvbm": {"metrics": {"enabled": False}, "diskCacheGB": 0},
                                   "threefs": {"enabled": False}}))
    assert not {"DynamoKVBMDiskTierIdle", "DynamoKVBMObjectReadFailures", "Dynamo3FSMountLost"} & set(no_kvbm)
    no_disk = alerts(rules("0.9", {"kvbm": {"diskCacheGB": 0}}))
    assert "DynamoKVBMDiskTierIdle" not in no_disk and "DynamoKVBMObjectReadFailures" in no_disk


def test_thresholds_durations_severities_and_switches_are_values():
    values = {"metrics": {"prometheusRule": {"alerts": {
        "timeToFirstToken": {"threshold": 7.5, "for": "3m", "severity": "critical"},
        "requestsQueued": {"enabled": False}}}}}
    rule = rules("0.9", values)
    found = alerts(rule)
    ttft = found["DynamoTimeToFirstTokenHigh"]
    assert ttft["expr"].endswith("> 7.5") and ttft["for"] == "3m" and ttft["labels"]["severity"] == "critical"
    assert "DynamoRequestsQueued" not in found
    assert ttft["annotations"]["runbook_url"] == \
        "https://charts.example/dynamo-offloading#dynamotimetofirsttokenhigh"
    assert rule["metadata"]["labels"]["app.kubernetes.io/component"] == "alerts"


def test_no_rule_without_its_switch():
    assert not find(render(environment_values("ipoib")), "PrometheusRule")


def expanded(annotations, labels):
    """Annotations as Prometheus expands their {{ $labels.x }}."""
    return {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), v) for k, v in annotations.items()}


def series(name, labels, values):
    return {"series": f"{name}{{{labels}}}", "values": values}


def histogram(name, labels, fast_le, slow_le, minutes):
    """A histogram whose observations all fall in the (fast_le, slow_le] bucket for `minutes`, then stop."""
    rising, flat = f"0+10x{minutes}", f"{10 * minutes}x30"
    return [series(f"{name}_bucket", f'{labels},le="{fast_le}"', "0x60"),
            series(f"{name}_bucket", f'{labels},le="{slow_le}"', f"{rising} {flat}"),
            series(f"{name}_bucket", f'{labels},le="+Inf"', f"{rising} {flat}")]


def cases(line):
    """Per alert: (input series, minute at which it fires, its labels then, a later minute without it)."""
    model = f'model="{MODEL}"'
    kvbm = f"{WORKER},pod=\"{POD}\""
    error_type = ',error_type="internal"' if line == "1.6" else ""
    return {
        "DynamoModelWithoutWorker": (
            [series("dynamo_component_inflight_requests", f'{WORKER},pod="{POD}",dynamo_endpoint="generate"',
                    "0x4 _x10 0x10")],
            13, {"model": MODEL}, 20),
        "DynamoFrontendErrors": (
            [series("dynamo_frontend_requests_total", f'{FRONTEND},{model},status="success"', "0+60x40"),
             series("dynamo_frontend_requests_total", f'{FRONTEND},{model},status="error"{error_type}',
                    "0+10x15 150x25")],
            12, {"namespace": NAMESPACE, "model": MODEL}, 25),
        "DynamoTimeToFirstTokenHigh": (
            histogram("dynamo_frontend_time_to_first_token_seconds", f"{FRONTEND},{model}", 1, 4, 20),
            15, {"namespace": NAMESPACE, "model": MODEL}, 30),
        "DynamoInterTokenLatencyHigh": (
            histogram("dynamo_frontend_inter_token_latency_seconds", f"{FRONTEND},{model}", 0.1, 0.5, 20),
            15, {"namespace": NAMESPACE, "model": MODEL}, 30),
        "DynamoRequestsQueued": (
            [series("dynamo_frontend_queued_requests", f"{FRONTEND},{model}", "20x10 0x10")],
            8, {"namespace": NAMESPACE, "model": MODEL}, 15),
        # 1.6 labels the uptime with the worker's id, which the restart changes: two series of one pod, the
        # first marked stale by the first scrape without it
        "DynamoWorkerRestarted": (
            [series("dynamo_component_uptime_seconds", f'{WORKER},pod="{POD}",worker_id="a"', "0+60x10 stale"),
             series("dynamo_component_uptime_seconds", f'{WORKER},pod="{POD}",worker_id="b"', "_x11 0+60x40")],
            13, {"namespace": NAMESPACE, "pod": POD}, 40),
        "Dynamo3FSMountLost": (
            [series("prober_probe_total", f'namespace="{NAMESPACE}",pod="{POD}",container="fuse-sidecar",'
                    'probe_type="Liveness",result="failed",job="kubelet"', "0x3 1 2 3x20")],
            5, {"namespace": NAMESPACE, "pod": POD, "container": "fuse-sidecar", "probe_type": "Liveness",
                "result": "failed", "job": "kubelet"}, 15),
        "DynamoKVBMDiskTierIdle": (
            [series("kvbm_offload_blocks_d2h", kvbm, "0+100x120"),
             series("kvbm_offload_blocks_h2d", kvbm, "0x75 0+10x45")],
            70, {"namespace": NAMESPACE, "job": f"{NAMESPACE}/dynamo-dynamo-offloading-worker", "pod": POD,
                 "model": MODEL}, 80),
        "DynamoKVBMObjectReadFailures": (
            [series("kvbm_object_read_failures", kvbm, "0x3 5x20")],
            5, {"namespace": NAMESPACE, "job": f"{NAMESPACE}/dynamo-dynamo-offloading-worker", "pod": POD,
                "model": MODEL}, 15),
    }


@pytest.mark.parametrize("line", LINES)
def test_each_alert_fires_and_resolves(line, tmp_path):
    rule = rules(line)
    found = alerts(rule)
    defined = cases(line)
    assert set(defined) == set(found), "every alert has a case"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(prometheus.rule_groups(rule)))
    tests = []
    for name, (inputs, fires_at, labels, quiet_at) in defined.items():
        labels = {**labels, "alertname": name, "severity": found[name]["labels"]["severity"]}
        tests.append({"interval": "1m", "input_series": inputs, "alert_rule_test": [
            {"eval_time": f"{fires_at}m", "alertname": name, "exp_alerts": [
                {"exp_labels": labels, "exp_annotations": expanded(found[name]["annotations"], labels)}]},
            {"eval_time": f"{quiet_at}m", "alertname": name, "exp_alerts": []}]})
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                         "tests": tests}, sort_keys=False))
    status, out = prometheus.promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert status == 0 and "SUCCESS" in out, out


def test_1_6_does_not_count_a_client_s_mistakes_as_errors(tmp_path):
    """1.6 counts unknown models and bad requests as errors (error_type validation, not_found): no page."""
    rule = rules("1.6")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(prometheus.rule_groups(rule)))
    model = f'model="{MODEL}"'
    inputs = [series("dynamo_frontend_requests_total", f'{FRONTEND},{model},status="success"', "0+60x40"),
              series("dynamo_frontend_requests_total", f'{FRONTEND},{model},status="error",error_type="validation"',
                     "0+30x40")]
    tests = [{"interval": "1m", "input_series": inputs, "alert_rule_test": [
        {"eval_time": "20m", "alertname": "DynamoFrontendErrors", "exp_alerts": []}]}]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests}))
    status, out = prometheus.promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert status == 0, out
