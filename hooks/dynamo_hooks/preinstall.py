"""The pre-install/pre-upgrade hook: find etcd and NATS as the worker will, verify them and 3FS mgmtd,
then record the resolved addresses in the ConfigMap the worker's pods mount (on an upgrade: before the
first install's objects exist, the worker's resolve sidecar records them at its first start)."""

import dataclasses

from dynamo_hooks import connections, mgmtd, record
from dynamo_hooks.kube import KubeError
from dynamo_hooks.report import OK, Finding, Report


@dataclasses.dataclass
class Plan:
    peers: list  # the connections.Connection of each peer the Dynamo processes use: etcd, NATS, both or none
    resolve: bool  # resolve Services to pod IPs (a hostNetwork worker)
    mgmtd_addresses: list
    cluster_id: str
    mgmtd_check: str
    strict: bool
    record_namespace: str
    record_name: str
    timeout: float
    required: list = dataclasses.field(default_factory=list)  # api_resources.Required the release's pods need


def skipped(conn, why):
    return Report(conn.name, [Finding(conn.peer or conn.name, OK, "skipped", why)])


def verify_connection(plan, api, conn):
    """(report, resolved URLs to record or None)."""
    if conn.embedded:
        return skipped(conn, f"the chart's embedded {conn.name} is created after this hook; "
                             "the worker's init container waits for it"), None
    try:
        found = connections.addresses(conn, api, plan.resolve, plan.timeout)
    except KubeError as err:
        return connections.soften(connections.failed_report(conn, err), conn.check), None
    if not found.urls:
        return connections.soften(connections.failed_report(conn, f"no {conn.name} address configured"),
                                  conn.check), None
    recorded = found.urls if found.source == "endpointslices" else None
    if conn.check == "off":
        report = skipped(conn, f"check off; {found.source} addresses {','.join(found.urls)}")
    else:
        report = connections.soften(connections.check(conn, found.urls, plan.timeout), conn.check)
    if found.note:
        report.findings.append(Finding(conn.peer, OK, "port-by-number", found.note))
    return report, recorded


def verify_mgmtd(plan):
    if not plan.mgmtd_addresses:
        return None
    if plan.mgmtd_check == "off":
        return Report("mgmtd", [Finding(",".join(plan.mgmtd_addresses), OK, "skipped", "check off")])
    report = mgmtd.check_mgmtd(plan.mgmtd_addresses, plan.cluster_id, plan.timeout, strict=plan.strict)
    return connections.soften(report, plan.mgmtd_check)


def run(plan, api):
    """The reports of the checks, and of the record when there was something to record: nothing is recorded
    unless every required check passed."""
    reports, data = [], {}
    if plan.required:
        from dynamo_hooks import api_resources

        reports += api_resources.check(api, plan.required, plan.timeout)
    for conn in plan.peers:
        report, urls = verify_connection(plan, api, conn)
        reports.append(report)
        if urls:
            data[conn.kind.env] = connections.env_value(conn, urls)
    mgmtd_report = verify_mgmtd(plan)
    if mgmtd_report:
        reports.append(mgmtd_report)
    if all(r.ok for r in reports) and data and plan.record_name:
        reports.append(record_report(plan, api, data))
    return reports


def record_report(plan, api, data):
    where = f"ConfigMap {plan.record_namespace}/{plan.record_name}"
    try:
        written = record.patch_record(api, plan.record_namespace, plan.record_name, data, plan.timeout)
    except KubeError as err:
        return err.report("record")
    said = (f"recorded the resolved addresses in {where}" if written else f"{where} does not exist yet (a first "
            "install): the worker's resolve sidecar records them at its start")
    return Report("record", [Finding(where, OK, "ok", said)], tally=said)
