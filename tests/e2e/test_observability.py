"""The chart's alerts and dashboards against a served release (testbed/serving.py): a real Prometheus
(testbed/prometheus.py) scrapes the real frontend and workers through the release's own ServiceMonitor and
PodMonitor, configured as the Prometheus Operator configures them, with the release's PrometheusRule loaded.

The stand-in engine runs no KVBM (`make kvbm-gpu` runs the real one, on a GPU, and records its exposition), and
kwok runs no kubelet: their series are only parsed here."""

import json
import time

import pytest
import yaml

from testbed import cluster, prometheus
from testbed.serving import RELEASE, chat, frontends, release

MONITORING = {"metrics": {"serviceMonitor": {"enabled": True, "interval": "2s"},
                          "podMonitor": {"enabled": True, "interval": "2s"},
                          "prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}}}
NOT_HERE = ("kvbm_", "prober_")  # series of processes the cluster tests do not run (see above)
SCRAPED_WITHIN = 60


def manifest(namespace):
    done = cluster.helm(4, "get", "manifest", RELEASE, "-n", namespace)
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def queries(objects, namespace):
    """(where, PromQL) of every dashboard panel's query and every alert of the installed release."""
    found = []
    for o in objects:
        if o["kind"] == "ConfigMap" and o["metadata"]["labels"].get("grafana_dashboard") == "1":
            (content,) = o["data"].values()
            board = json.loads(content)
            found += [(f"{board['title']}: {title}", q) for title, q in prometheus.dashboard_queries(board, namespace)]
        if o["kind"] == "PrometheusRule":
            found += [(f"alert {r['alert']}", r["expr"]) for g in o["spec"]["groups"] for r in g["rules"]]
    return found


def scraping(objects, directory):
    """A Prometheus scraping the release's monitors, with its rules."""
    monitors = [o for o in objects if o["kind"] in ("ServiceMonitor", "PodMonitor")]
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    return prometheus.running(directory, prometheus.scrape_configs(monitors, cluster.KUBECONFIG),
                              prometheus.rule_groups(rule))


def up(server, endpoint):
    return [t for t in server.targets() if t["labels"].get("endpoint") == endpoint and t["health"] == "up"]


@pytest.fixture(scope="module", params=["0.9", "1.6"], ids=lambda line: f"dynamo-{line}")
def observed(request, seed_peers, hub, mgmtd, tmp_path_factory):
    """The seed's release on a release line, scraped, after some chat completions: (namespace, runner,
    Prometheus, the release's objects)."""
    with release("ipoib", 4, mgmtd, hub, MONITORING, {"dynamo": {"release": request.param}}) as (namespace, runner):
        objects = manifest(namespace)
        with scraping(objects, tmp_path_factory.mktemp("prometheus")) as server:
            cluster.wait_until(lambda: up(server, "http") and up(server, "system"),
                               "the frontend and the worker scraped", within=SCRAPED_WITHIN)
            frontend = frontends(namespace)[0]
            for i in range(6):
                chat(frontend.status.pod_ip, "Qwen/Qwen3-8B", f"request {i} " * 40, max_tokens=8)
            time.sleep(6)  # three scrapes
            yield namespace, runner, server, objects


def test_every_query_returns_data_or_names_only_exported_series(observed):
    namespace, _, server, objects = observed
    exported = server.names()
    empty = []
    checked = 0
    for where, expr in queries(objects, namespace):
        names = server.selected(expr)
        assert names, f"{where}: selects nothing: {expr}"
        if any(n.startswith(NOT_HERE) for n in names):
            continue
        checked += 1
        if not server.query(expr):
            missing = names - exported
            assert not missing, f"{where}: {sorted(missing)} not exported by the frontend or the worker: {expr}"
            empty.append(where)
    assert checked >= 15
    # the panels show the requests just sent; what may be empty is what nothing went wrong for
    serving = {w for w, _ in queries(objects, namespace) if w.startswith("Dynamo serving")}
    assert not (serving - {w for w in serving if "Error ratio" in w}) & set(empty), empty
    assert all(w.startswith(("alert ", "Dynamo serving")) for w in empty), empty


def test_the_rules_load_and_none_fires_while_serving(observed):
    _, _, server, objects = observed
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    loaded = {r["name"] for g in server.api("rules")["groups"] for r in g["rules"]}
    assert loaded == {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert not server.alerts(), server.alerts()


def test_a_killed_worker_sets_off_the_no_worker_alert(observed):
    namespace, runner, server, _ = observed
    (pod,) = cluster.release_pods(namespace, RELEASE, "worker")

    def alert():
        return [a for a in server.alerts() if a["labels"]["alertname"] == "DynamoModelWithoutWorker"]
    runner.kill(pod.metadata.name, "worker")
    found = cluster.wait_until(alert, "DynamoModelWithoutWorker", within=30, every=0.5)
    assert found[0]["state"] in ("pending", "firing")
    assert found[0]["labels"]["model"] == "Qwen/Qwen3-8B" and found[0]["labels"]["severity"] == "critical"
    cluster.wait_until(lambda: not alert(), "the alert resolved once the worker serves again", within=120)
