"""The chart's alert rules and Grafana dashboards, for each release line, from generator/observability.yaml."""

import json
import pathlib
import re

import yaml

SPEC_FILE = pathlib.Path(__file__).with_name("observability.yaml")
FIELD = re.compile(r"\{(\w+)\}")
# What {frontend} and {worker} become: alerts leave placeholders the chart fills from the release's scrape
# objects (chart/templates/monitoring/prometheusrule.yaml); dashboards select the namespace chosen on them.
ALERT_SELECTORS = {"frontend": "$frontend", "worker": "$worker"}
DASHBOARD_SELECTORS = {"frontend": 'namespace="$namespace"', "worker": 'namespace="$namespace"'}
BY = re.compile(r"\bby \(([^)]*)\)")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}  # the dashboard's data source variable


def load():
    return yaml.safe_load(SPEC_FILE.read_text())


def fill(expr, fields):
    """`expr` with each {name} replaced by fields[name]; an unknown name is an error."""
    def one(match):
        if match[1] not in fields:
            raise ValueError(f"{SPEC_FILE.name}: unknown field {match[0]} in {expr!r}")
        return fields[match[1]]
    return " ".join(FIELD.sub(one, expr).split())


def rules(spec, line):
    """The release line's alerts as chart/files/rules-<line>.yaml holds them."""
    fields = {**spec["lines"][line], **ALERT_SELECTORS}
    out = []
    for alert in spec["alerts"]:
        rule = {"alert": alert["alert"], "key": alert["key"]}
        rule.update({k: alert[k] for k in ("per", "when") if k in alert})
        rule["expr"] = fill(alert["expr"], fields)
        rule["annotations"] = {"summary": alert["summary"], "description": " ".join(alert["description"].split())}
        out.append(rule)
    return out


def legend(expr, name=None):
    """Grafana's legend for a query: the labels it is summed by, then the query's name."""
    found = BY.search(expr)
    labels = [f"{{{{{label.strip()}}}}}" for label in found[1].split(",") if label.strip() != "le"] if found else []
    return " ".join(labels + ([name] if name else [])) or "value"


def variable(name, label, query=None, include_all=False):
    """A dashboard variable: the Prometheus data source, or a label's values (all of them matching as .*)."""
    if query is None:
        return {"name": name, "label": label, "type": "datasource", "query": "prometheus", "current": {}}
    found = {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
             "query": {"query": query, "refId": "variable"}, "definition": query, "refresh": 2, "sort": 1,
             "current": {}}
    return {**found, "includeAll": True, "allValue": ".*"} if include_all else found


def dashboard(spec, name, line, description=""):
    """One dashboard of one release line, as Grafana's JSON model."""
    board = spec["dashboards"][name]
    fields = {**spec["lines"][line], **DASHBOARD_SELECTORS}
    panels = []
    for i, panel in enumerate(board["panels"]):
        queries = panel.get("exprs") or {None: panel["expr"]}
        targets = [{"refId": chr(ord("A") + j), "expr": fill(expr, fields), "legendFormat": legend(expr, label),
                    "datasource": DATASOURCE}
                   for j, (label, expr) in enumerate(queries.items())]
        panels.append({"id": i + 1, "type": "timeseries", "title": panel["title"],
                       "datasource": DATASOURCE,
                       "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                       "fieldConfig": {"defaults": {"unit": panel["unit"]}, "overrides": []},
                       "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                                   "tooltip": {"mode": "multi"}},
                       "targets": targets})
    series = "dynamo_frontend_requests_total" if name == "serving" else fill("{kvbm}matched_tokens", fields)
    variables = [variable("datasource", "Data source"),
                 variable("namespace", "Namespace", f"label_values({series}, namespace)")]
    if any("$model" in t["expr"] for p in panels for t in p["targets"]):
        models = 'label_values(dynamo_frontend_requests_total{namespace="$namespace"}, model)'
        variables.append(variable("model", "Model", models, include_all=True))
    return {"title": f"{board['title']} ({line})", "uid": f"{board['uid']}-{line.replace('.', '')}",
            "description": description, "tags": ["dynamo", "dynamo-offloading"], "timezone": "browser",
            "schemaVersion": 39, "editable": False, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": variables}, "panels": panels}


def files(header):
    """{path: content} of the rules file and the dashboards of each release line."""
    spec = load()
    out = {}
    for line in spec["lines"]:
        comment = "".join(f"# {text}\n" for text in header.splitlines())
        out[f"chart/files/rules-{line}.yaml"] = comment + yaml.safe_dump(rules(spec, line), sort_keys=False,
                                                                          width=120)
        for name in spec["dashboards"]:
            out[f"chart/files/dashboards/{name}-{line}.json"] = json.dumps(dashboard(spec, name, line, header),
                                                                            indent=2) + "\n"
    return out


def runbook():
    """The alerts' rows for chart/README.md: name, key, summary, runbook."""
    return [{"alert": a["alert"], "key": a["key"], "summary": a["summary"], "runbook": " ".join(a["runbook"].split())}
            for a in load()["alerts"]]
