"""Prometheus and promtool (hack/prometheus.py builds them from the Prometheus Go module) for the chart's alert rules
and dashboards: promtool's checks and rule unit tests, and a real Prometheus scraping what the chart's
ServiceMonitor and PodMonitor select, configured as the Prometheus Operator would configure it."""

import contextlib
import json
import re
import subprocess
import urllib.parse
import urllib.request

import yaml

from hack import prometheus as build
from testbed import servers

READY_TIMEOUT = 30.0
QUERY_TIMEOUT = 10.0
# What a dashboard's Grafana variables stand for when its queries run here.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model": ".*"}


def binary(name):
    path = build.bin_dir() / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make prometheus`")
    return str(path)


def promtool(*args, cwd=None):
    """promtool's exit status and output."""
    done = subprocess.run([binary("promtool"), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)
    return done.returncode, done.stdout + done.stderr


def rule_groups(prometheus_rule):
    """A PrometheusRule's spec as a Prometheus rules file."""
    return {"groups": prometheus_rule["spec"]["groups"]}


def dashboard_queries(dashboard, namespace):
    """(panel title, PromQL) of each query of a Grafana dashboard, its variables filled in."""
    variables = {**GRAFANA_VARIABLES, "$namespace": namespace}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in sorted(variables.items(), key=lambda item: -len(item[0])):
                expr = expr.replace(name, value)
            yield panel["title"], expr


def as_recording_rules(queries):
    """Queries as a rules file of recording rules: promtool parses each."""
    return {"groups": [{"name": "queries", "rules": [{"record": f"query:{i}", "expr": q}
                                                     for i, q in enumerate(queries)]}]}


def metric_names(exposition):
    """The metric names a Prometheus text exposition declares (# TYPE lines)."""
    return set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))


def _sanitized(label):
    return re.sub(r"[^A-Za-z0-9_]", "_", label)


def _keep_labels(kind, match_labels):
    """The Prometheus Operator's relabelling that keeps the targets whose object carries every selector label."""
    return [{"action": "keep",
             "source_labels": [f"__meta_kubernetes_{kind}_label_{_sanitized(k)}",
                               f"__meta_kubernetes_{kind}_labelpresent_{_sanitized(k)}"],
             "regex": f"({re.escape(v)});true"} for k, v in sorted(match_labels.items())]


def _target_labels(job, port):
    """namespace, pod, container, endpoint, and job, set by the relabelling rule `job`."""
    common = [("__meta_kubernetes_namespace", "namespace"), ("__meta_kubernetes_pod_name", "pod"),
              ("__meta_kubernetes_pod_container_name", "container")]
    return ([{"source_labels": [source], "target_label": target} for source, target in common]
            + [job, {"target_label": "endpoint", "replacement": port}])


def scrape_configs(monitors, kubeconfig, interval="2s"):
    """Scrape configurations for rendered PodMonitors and ServiceMonitors, as the Prometheus Operator generates
    them (pkg/prometheus/promcfg.go): Kubernetes discovery of the object's namespace, the selector and the port
    kept by relabelling, and its target labels: namespace, pod, container, endpoint, and job, which is the
    Service's name for a ServiceMonitor and <namespace>/<name> for a PodMonitor. The interval is the test's."""
    configs = []
    for monitor in monitors:
        namespace, name = monitor["metadata"]["namespace"], monitor["metadata"]["name"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        pod_monitor = monitor["kind"] == "PodMonitor"
        endpoints = monitor["spec"]["podMetricsEndpoints" if pod_monitor else "endpoints"]
        for i, endpoint in enumerate(endpoints):
            discovery = {"role": "pod" if pod_monitor else "endpointslice", "kubeconfig_file": str(kubeconfig),
                         "namespaces": {"names": [namespace]}}
            if pod_monitor:
                relabel = _keep_labels("pod", selector) + [
                    {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
                    {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                     "regex": endpoint["port"]}]
                job = {"target_label": "job", "replacement": f"{namespace}/{name}"}
            else:
                relabel = _keep_labels("service", selector) + [
                    {"action": "keep", "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                     "regex": endpoint["port"]},
                    {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"}]
                job = {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"}
            relabel += _target_labels(job, endpoint["port"])
            configs.append({"job_name": f"{monitor['kind'].lower()}/{namespace}/{name}/{i}",
                            "scrape_interval": interval, "scrape_timeout": interval,
                            "metrics_path": endpoint.get("path", "/metrics"), "kubernetes_sd_configs": [discovery],
                            "relabel_configs": relabel})
    return configs


class Prometheus:
    """A running Prometheus on 127.0.0.1: its HTTP API."""

    def __init__(self, url):
        self.url = url

    def api(self, path, **params):
        query = urllib.parse.urlencode(params)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/api/v1/{path}?{query}", timeout=QUERY_TIMEOUT) as answer:
            body = json.load(answer)
        if body["status"] != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        """The instant vector (or scalar) result of a query, now."""
        return self.api("query", query=expr)["result"]

    def query_range(self, expr, start, end, step):
        """The range vector result of a query: [{"metric": labels, "values": [[time, "value"], ...]}]."""
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def names(self):
        return set(self.api("label/__name__/values"))

    def targets(self):
        return self.api("targets")["activeTargets"]

    def alerts(self):
        return self.api("alerts")["alerts"]

    def selected(self, expr):
        """The metric names an expression selects, from Prometheus's own parse of it."""
        found = set()

        def walk(node):
            if isinstance(node, dict):
                if "matchers" in node and node.get("name"):
                    found.add(node["name"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(self.api("parse_query", query=expr))
        return found


@contextlib.contextmanager
def running(directory, scrape, rules=None, evaluation_interval="2s"):
    """A Prometheus with these scrape configurations and rules file (a dict), its data under `directory`;
    stopped when the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {"global": {"scrape_interval": "2s", "evaluation_interval": evaluation_interval},
              "scrape_configs": scrape}
    if rules:
        (directory / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config["rule_files"] = [str(directory / "rules.yaml")]
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = servers.free_port()
    process = servers.Process([binary("prometheus"), f"--config.file={directory / 'prometheus.yml'}",
                               f"--storage.tsdb.path={directory / 'data'}",
                               f"--web.listen-address=127.0.0.1:{port}"], directory / "prometheus.log")
    server = Prometheus(f"http://127.0.0.1:{port}")

    def answers():
        try:
            return server.api("status/runtimeinfo")
        except OSError:
            return None
    try:
        servers.wait_ready("prometheus", process, answers, READY_TIMEOUT)
        yield server
    finally:
        process.stop()
