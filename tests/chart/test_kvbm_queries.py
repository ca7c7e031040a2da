"""The KVBM dashboard's queries and KVBM's alerts against KVBM's real metrics: no KVBM runs without a GPU, so a
real Prometheus scrapes the exposition that `make kvbm-gpu` recorded from KVBM's metrics endpoint after its round
trip through the tiers (kvbm-exposition-<version>.txt beside this file, from the run's $OUT), served as the
worker pod's KVBM port would serve it, with the target labels the chart's PodMonitor gives."""

import contextlib
import http.server
import pathlib
import threading
import time

import pytest

from testbed import prometheus
from tests.chart.test_alerts import POD, alerts, rules
from tests.chart.test_dashboards import board, dashboards
from tests.helm import NAMESPACE

HERE = pathlib.Path(__file__).parent
# release line -> the KVBM version whose exposition a GPU run of make kvbm-gpu recorded after its tier round
# trip (NVIDIA H100: 0.9.0 on 2026-12-06, 1.6.1 on 2026-12-07)
RECORDED = {"0.9": "0.9.0", "1.6": "1.6.1"}
SCRAPED_WITHIN = 30


def exposition(line):
    return (HERE / f"kvbm-exposition-{RECORDED[line]}.txt").read_text()


@contextlib.contextmanager
def serving(text):
    """An HTTP server on loopback answering /metrics with `text`: its host:port."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def as_the_pod_monitor_labels(target):
    """A static scrape of `target` labelled as the PodMonitor labels the worker's KVBM port."""
    labels = {"namespace": NAMESPACE, "pod": POD, "container": "worker", "endpoint": "kvbm-metrics",
              "job": f"{NAMESPACE}/dynamo-dynamo-offloading-worker"}
    return [{"job_name": "kvbm", "scrape_interval": "1s", "scrape_timeout": "1s",
             "static_configs": [{"targets": [target]}],
             "relabel_configs": [{"target_label": k, "replacement": v} for k, v in labels.items()]}]


def kvbm_queries(line):
    found = [(f"panel {title}", q) for title, q in
             prometheus.dashboard_queries(board(dashboards({"dynamo": {"release": line}})["dashboard-kvbm"]),
                                          NAMESPACE)]
    found += [(f"alert {name}", rule["expr"]) for name, rule in alerts(rules(line)).items() if "KVBM" in name]
    return found


@pytest.mark.parametrize("line", RECORDED)
def test_kvbm_queries_find_kvbm_s_recorded_series(line, tmp_path):
    text = exposition(line)
    declared = prometheus.metric_names(text)
    assert any("offload_blocks_d2h" in name for name in declared), "a KVBM exposition"
    with serving(text) as target, prometheus.running(tmp_path, as_the_pod_monitor_labels(target)) as server:
        deadline = time.monotonic() + SCRAPED_WITHIN
        while not server.query("up{job=~'.+/dynamo-dynamo-offloading-worker'} == 1"):
            assert time.monotonic() < deadline, "the recorded exposition scraped"
            time.sleep(0.5)
        time.sleep(2.5)  # two more scrapes: rate() needs two samples
        for where, expr in kvbm_queries(line):
            names = server.selected(expr)
            assert names and names <= declared, f"{where}: {sorted(names - declared)} not in KVBM's exposition"
            if where.startswith("panel"):
                assert server.query(expr), f"{where} returns nothing: {expr}"
