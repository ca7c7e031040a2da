"""The worker's init container: resolve etcd and NATS again at every start (their pod IPs change when
their pods restart), wait for them, find the model's snapshot, and hand the result to the worker as a
shell file it sources.

Addresses fall back, when the Kubernetes API cannot be read, to the pre-install hook's record (a
ConfigMap mounted into the pod, which the kubelet serves without the API), then to the explicit values
already in the environment."""

import dataclasses
import pathlib
import shlex
import time

from dynamo_hooks import connections, model_path
from dynamo_hooks.kube import KubeError
from dynamo_hooks.report import Report

RETRY_SECONDS = 2


@dataclasses.dataclass
class Plan:
    etcd: connections.Connection
    nats: connections.Connection
    resolve: bool
    record_dir: str  # the mounted record ConfigMap ("" = none)
    wait_seconds: float
    timeout: float
    hf_home: str = ""
    model_repo: str = ""
    model_revision: str = "main"
    model_snapshot: str = ""


def recorded(record_dir, conn):
    """The pre-install hook's addresses for `conn` from the mounted ConfigMap, or []."""
    if not record_dir:
        return []
    path = pathlib.Path(record_dir) / connections.RECORD_KEYS[conn.name]
    return [a for a in path.read_text().strip().split(",") if a] if path.is_file() else []


def find_addresses(plan, api, conn, log):
    """(URLs, source). Resolution first; when the API cannot be read, the record, then explicit values."""
    try:
        return connections.addresses(conn, api, plan.resolve, plan.timeout)
    except KubeError as err:
        if err.reason not in ("unreachable", "timeout", "forbidden", "api-error"):
            raise
        log(f"{conn.name}: cannot resolve {conn.peer} ({err.message}); falling back")
    urls = recorded(plan.record_dir, conn)
    return (urls, "record") if urls else ([], "values")


def wait_for(plan, api, conn, log):
    """URLs of `conn` once its check passes (at once when its check is off). After wait_seconds, the last
    failure raises TimeoutError, or with a warn check is logged and the start goes on."""
    deadline = time.monotonic() + plan.wait_seconds
    while True:
        try:
            urls, source = find_addresses(plan, api, conn, log)
            report = connections.check(conn, urls, plan.timeout) if urls and conn.check != "off" else None
        except KubeError as err:
            urls, source, report = [], "endpointslices", connections.failed_report(conn, err)
        if not urls and source == "values":
            return [], source  # nothing better than what the worker's environment already holds
        if urls and (report is None or report.ok):
            return urls, source
        why = report.summary() if isinstance(report, Report) else f"{conn.name}: no address"
        remaining = deadline - time.monotonic()
        if remaining <= 0 and conn.check == "warn" and urls:
            log(f"warning: {why} (waited {plan.wait_seconds:.0f} s); starting anyway")
            return urls, source
        if remaining <= 0:
            raise TimeoutError(f"{why} (waited {plan.wait_seconds:.0f} s)")
        log(f"waiting: {why}")
        time.sleep(min(RETRY_SECONDS, remaining))


def handoff(plan, api, log):
    """{variable: value} for the worker: ETCD_ENDPOINTS, NATS_SERVER (when resolved) and MODEL_PATH."""
    env = {}
    for conn in (plan.etcd, plan.nats):
        urls, source = wait_for(plan, api, conn, log)
        if urls:
            env[connections.RECORD_KEYS[conn.name]] = ",".join(urls) if conn.name == "etcd" else urls[0]
        log(f"{conn.name}: {','.join(urls) or 'the values given to the worker'} ({source})")
    if plan.model_repo:
        path = model_path.resolve_snapshot(plan.hf_home, plan.model_repo, plan.model_revision, plan.model_snapshot)
        env["MODEL_PATH"] = str(path)
        log(f"model: {path}")
    return env


def write_env_file(path, env):
    """A file of `export NAME=value` lines, written whole so the worker never reads half of it."""
    target = pathlib.Path(path)
    tmp = target.with_suffix(".tmp")
    tmp.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items())))
    tmp.replace(target)
