"""The worker's resolve sidecar: resolve etcd and NATS again at every start of the worker container (their
pod IPs change when their pods restart), wait for them, find the model's snapshot, and hand the result to
the worker as a shell file it sources.

It hands over once when it starts, before the kubelet starts the worker; then, serving, once more for each
request the worker's start script writes (a token in a file): init containers run again only when the pod
is recreated, not when the worker container restarts after its etcd lease was lost.

Addresses fall back, when the Kubernetes API cannot be read, to the last resolved ones (a ConfigMap
mounted into the pod, which the kubelet serves without the API), then to the values already in the
worker's environment. What a start resolves is recorded in that ConfigMap for the next one."""

import dataclasses
import pathlib
import shlex
import time

from dynamo_hooks import connections, model_path, record
from dynamo_hooks.kube import KubeError

# What a handoff raises when the worker must not start: a required peer that never answered, an API error
# that is not a reason to fall back, or no model in the node's cache.
HANDOFF_ERRORS = (TimeoutError, KubeError, model_path.ModelNotFound)

RETRY_SECONDS = 2
VALUES = connections.Found([], "values")  # no address found: the worker keeps the values it was given


@dataclasses.dataclass
class Plan:
    peers: list  # the connections.Connection of each peer the worker uses: etcd, NATS, both or none
    resolve: bool
    record_dir: str  # the mounted record ConfigMap ("" = none)
    record_name: str  # that ConfigMap, patched with what this start resolves ("" = not recorded)
    wait_seconds: float
    timeout: float
    hf_home: str = ""
    model_repo: str = ""
    model_revision: str = "main"
    model_snapshot: str = ""
    record_namespace: str = ""


def recorded(record_dir, conn):
    """The pre-install hook's addresses for `conn` from the mounted ConfigMap, or []."""
    if not record_dir:
        return []
    path = pathlib.Path(record_dir) / conn.kind.env
    return [a for a in path.read_text().strip().split(",") if a] if path.is_file() else []


def find_addresses(plan, api, conn, log):
    """connections.Found: resolution first; when the API cannot be read, the record, then explicit values."""
    try:
        return connections.addresses(conn, api, plan.resolve, plan.timeout)
    except KubeError as err:
        if err.reason not in ("unreachable", "timeout", "forbidden", "api-error"):
            raise
        log(f"{conn.name}: cannot resolve {conn.peer} ({err.message}); falling back")
    urls = recorded(plan.record_dir, conn)
    return connections.Found(urls, "record") if urls else VALUES


def wait_for(plan, api, conn, log):
    """connections.Found for `conn` once its check passes; VALUES leaves the worker's own values.
    An off check is not waited for; after wait_seconds a warn check starts anyway and a required one
    raises TimeoutError with the last failure."""
    deadline = time.monotonic() + plan.wait_seconds
    while True:
        try:
            found = find_addresses(plan, api, conn, log)
        except KubeError as err:  # the API answered, but gave no usable address (yet)
            found, why = VALUES, connections.failed_report(conn, err).summary()
        else:
            if not found.urls or conn.check == "off":
                return found
            report = connections.check(conn, found.urls, plan.timeout)
            if report.ok:
                return found
            why = report.summary()
        if conn.check == "off":
            log(f"{why}; the check is off: starting with the worker's values")
            return VALUES
        remaining = deadline - time.monotonic()
        if remaining <= 0 and conn.check == "warn":
            log(f"warning: {why} (waited {plan.wait_seconds:.0f} s); starting anyway")
            return found
        if remaining <= 0:
            raise TimeoutError(f"{why} (waited {plan.wait_seconds:.0f} s)")
        log(f"waiting: {why}")
        time.sleep(min(RETRY_SECONDS, remaining))


def record_resolved(plan, api, data, log):
    """Best effort: a start never fails because the record could not be written."""
    where = f"ConfigMap {plan.record_namespace}/{plan.record_name}"
    try:
        written = record.patch_record(api, plan.record_namespace, plan.record_name, data, plan.timeout)
    except KubeError as err:
        log(f"warning: could not record the resolved addresses in {where}: {err.message}")
        return
    log(f"recorded the resolved addresses in {where}" if written else f"{where} does not exist; nothing recorded")


def handoff(plan, api, log):
    """{variable: value} for the worker: ETCD_ENDPOINTS, NATS_SERVER (when used and found) and MODEL_PATH."""
    env, resolved = {}, {}
    for conn in plan.peers:
        found = wait_for(plan, api, conn, log)
        key = conn.kind.env
        if found.urls:
            env[key] = connections.env_value(conn, found.urls)
        if found.source == "endpointslices":
            resolved[key] = env[key]
        note = f"; {found.note}" if found.note else ""
        log(f"{conn.name}: {','.join(found.urls) or 'the values given to the worker'} ({found.source}{note})")
    if resolved and plan.record_name:
        record_resolved(plan, api, resolved, log)
    if plan.model_repo:
        path = model_path.resolve_snapshot(plan.hf_home, plan.model_repo, plan.model_revision, plan.model_snapshot)
        env["MODEL_PATH"] = str(path)
        log(f"model: {path}")
    return env


def write_env_file(path, env, trailer=""):
    """A file of `export NAME=value` lines (then the trailer, a comment line), written whole so the worker
    never reads half of it."""
    target = pathlib.Path(path)
    tmp = target.with_suffix(".tmp")
    lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    try:
        tmp.write_text(lines + (f"{trailer}\n" if trailer else ""))
        tmp.replace(target)
    except OSError as err:
        raise OSError(f"cannot write {target}: {err.strerror}") from err


def read_request(path):
    """The token of the worker's latest request, or "" when there is none."""
    try:
        return pathlib.Path(path).read_text().strip()
    except FileNotFoundError:
        return ""


def serve(plan, api_factory, output, request_path, env, log, poll_seconds=0.5, stop=None):
    """Answer each new request token in `request_path` with a fresh handoff in `output`, ending in the line
    `# answer: TOKEN`; a handoff that fails keeps the last addresses and ends in `# failed: TOKEN: why`, for
    the start script to print. `env` is the last handoff. Runs until `stop()` is true (the pod's end)."""
    answered = ""
    while not (stop and stop()):
        token = read_request(request_path)
        if token and token != answered:
            answered = token
            log(f"request {token}: resolving again")
            try:
                env = handoff(plan, api_factory(), log)
            except HANDOFF_ERRORS as err:
                message = " ".join(str(getattr(err, "message", None) or err).split())
                log(f"request {token}: {message}")
                write_env_file(output, env, f"# failed: {token}: {message}")
            else:
                write_env_file(output, env, f"# answer: {token}")
        time.sleep(poll_seconds)
