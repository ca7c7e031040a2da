"""`make dashboard-look`: the serving dashboard drawn once with real data, for the chart README.

The real Dynamo 0.9.0 frontend and the stand-in engine under the real runtime (testbed/by_hand.py) serve two
minutes of chat completions; a real Prometheus scrapes them, labelled as the chart's ServiceMonitor and PodMonitor
label them; each panel of the chart's serving dashboard (chart/files/dashboards/serving-0.9.json) is queried over
that window and drawn as a static page (SVG, no Grafana: Grafana is not in the package registries this project
builds from), which Debian's chromium, headless, turns into docs/serving-dashboard.png.

    python -m hack.dashboard_look [--out docs/serving-dashboard.png] [--seconds 120]
"""

import argparse
import html
import json
import pathlib
import random
import re
import subprocess
import tempfile
import time

from testbed import by_hand, prometheus
from testbed.helm import CHART, ROOT
from testbed.serving import chat, request

NAMESPACE, RELEASE = "dynamo", "dynamo"
FRONTEND_JOB = f"{RELEASE}-dynamo-offloading-frontend"
WORKER_POD = f"{RELEASE}-dynamo-offloading-worker-0"
SYSTEM_PORT = 8081
COLOURS = ("#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1")
WIDTH, HEIGHT = 640, 220


def scrape(deployment):
    """Static scrapes of the frontend and the worker with the labels the chart's monitors give them."""
    def job(name, port, labels):
        return {"job_name": name, "scrape_interval": "2s",
                "static_configs": [{"targets": [f"{deployment.host.address}:{port}"]}],
                "relabel_configs": [{"target_label": k, "replacement": v} for k, v in labels.items()]}
    return [job("frontend", by_hand.HTTP_PORT, {"namespace": NAMESPACE, "job": FRONTEND_JOB, "endpoint": "http"}),
            job("worker", SYSTEM_PORT, {"namespace": NAMESPACE, "pod": WORKER_POD, "endpoint": "system",
                                        "job": f"{NAMESPACE}/{RELEASE}-dynamo-offloading-worker"})]


def traffic(deployment, seconds):
    """Chat completions of varied prompt and answer lengths, for `seconds`."""
    address = deployment.host.address
    rng = random.Random(7)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        words = rng.randint(20, 400)
        chat(address, by_hand.MODEL, " ".join(f"word{rng.randint(0, 999)}" for _ in range(words)),
             max_tokens=rng.randint(4, 48))
        time.sleep(rng.uniform(0.05, 0.4))


def served(deployment):
    try:
        return any(m["id"] == by_hand.MODEL for m in request(deployment.url + "/v1/models", timeout=2)["data"])
    except OSError:
        return False


def legend(template, labels):
    return re.sub(r"\{\{(\w+)\}\}", lambda m: labels.get(m[1], ""), template)


def svg(series, unit):
    """One panel's series as an SVG line chart, with its value range on the axis."""
    points = [(t, v) for s in series for t, v in s["values"]]
    if not points:
        return f'<svg width="{WIDTH}" height="{HEIGHT}"><text x="20" y="40" fill="#888">no data</text></svg>'
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    top = max(v for _, v in points) or 1.0
    lines = []
    for i, s in enumerate(series):
        xy = " ".join(f"{50 + (t - t0) / max(t1 - t0, 1) * (WIDTH - 60):.1f},"
                      f"{HEIGHT - 20 - v / top * (HEIGHT - 40):.1f}" for t, v in s["values"])
        lines.append(f'<polyline fill="none" stroke="{COLOURS[i % len(COLOURS)]}" stroke-width="2" points="{xy}"/>')
    axis = (f'<text x="4" y="24" fill="#aaa" font-size="11">{top:.3g} {html.escape(unit)}</text>'
            f'<text x="4" y="{HEIGHT - 20}" fill="#aaa" font-size="11">0</text>'
            f'<line x1="50" y1="{HEIGHT - 20}" x2="{WIDTH - 10}" y2="{HEIGHT - 20}" stroke="#444"/>')
    return f'<svg width="{WIDTH}" height="{HEIGHT}">{axis}{"".join(lines)}</svg>'


def page(board, panels):
    cells = []
    for panel, series in panels:
        keys = "".join(f'<span style="color:{COLOURS[i % len(COLOURS)]}">&#9644; {html.escape(s["legend"])}</span> '
                       for i, s in enumerate(series))
        cells.append(f'<div class="panel"><h3>{html.escape(panel["title"])}</h3>'
                     f'{svg(series, panel["fieldConfig"]["defaults"]["unit"])}<div class="keys">{keys}</div></div>')
    return (f'<html><head><meta charset="utf-8"><style>body{{background:#111217;color:#ccc;font:13px sans-serif;'
            f'margin:12px}} .panel{{display:inline-block;vertical-align:top;background:#181b1f;margin:4px;padding:8px;'
            f'width:{WIDTH}px}} h3{{margin:0 0 6px;font-size:14px;color:#ddd}} .keys{{font-size:11px}}</style></head>'
            f'<body><h2>{html.escape(board["title"])} - namespace {NAMESPACE}, all models</h2>{"".join(cells)}'
            f'</body></html>')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "serving-dashboard.png"))
    parser.add_argument("--seconds", type=int, default=120)
    args = parser.parse_args(argv)
    board = json.loads((CHART / "files" / "dashboards" / "serving-0.9.json").read_text())
    with tempfile.TemporaryDirectory(prefix="dashboard-look-") as tmp:
        tmp = pathlib.Path(tmp)
        with by_hand.started(tmp / "dynamo") as deployment:
            deployment.frontend("kv")
            deployment.worker("worker", SYSTEM_PORT)
            deployment.wait_for("the model served", lambda: served(deployment))
            with prometheus.running(tmp / "prometheus", scrape(deployment)) as server:
                start = time.time()
                traffic(deployment, args.seconds)
                time.sleep(4)
                end = time.time()
                panels = []
                for panel in board["panels"]:
                    series = []
                    for target, (_, expr) in zip(panel["targets"], prometheus.dashboard_queries(
                            {"panels": [panel]}, NAMESPACE), strict=True):
                        for found in server.query_range(expr, start, end, "5s"):
                            values = [(float(t), float(v)) for t, v in found["values"] if v not in ("NaN", "+Inf")]
                            series.append({"legend": legend(target["legendFormat"], found["metric"]),
                                           "values": values})
                    panels.append((panel, series))
        (tmp / "look.html").write_text(page(board, panels))
        rows = (len(panels) + 1) // 2
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={2 * (WIDTH + 40) + 40},{80 + rows * (HEIGHT + 90)}",
                        f"--screenshot={out}", (tmp / "look.html").as_uri()], check=True, capture_output=True,
                       timeout=120)
    print(f"dashboard-look: {out} ({sum(1 for _, s in panels if s)} of {len(panels)} panels with data)")


if __name__ == "__main__":
    main()
