"""A kubelet for the chart's own pods: it runs, as local processes, the pods labelled
dynamo-offloading.test/runner=true (kwok's stages leave them alone) and reports their real outcome.

For each such pod scheduled to a node it starts the containers in order, as a kubelet would: the command
(the hooks image's entrypoint, `dynamo-hooks`, when the spec gives only args), the environment with its
valueFrom references resolved, and the volumes written to a directory each (ConfigMaps, Secrets, projected
ServiceAccount tokens minted with the TokenRequest API for the pod's ServiceAccount, emptyDirs; a hostPath
volume maps to a directory of the test per node) and bind-mounted at their mount paths in a private mount
namespace. The API server is reached at the address the kubeconfig names. The pod's status goes Running,
then Succeeded or Failed with each container's exit code and the end of its log; the whole log stays in
`logs` for the test."""

import base64
import contextlib
import datetime
import ipaddress
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.parse

from kubernetes import client

from tests.e2e import cluster
from tests.e2e.netns import TEST_NETWORK
from tests.helm import ROOT

LABEL = "dynamo-offloading.test/runner"
ENTRYPOINT = [str(ROOT / ".venv" / "bin" / "dynamo-hooks")]  # the hooks image's ENTRYPOINT
RUN_TIMEOUT = 300
WORKDIR = ROOT / "build" / "runner"


def now():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodRunner:
    """Runs the runner-labelled pods of `namespace` until stopped. `skip_nodes`: nodes whose pods it never
    starts (a node that is down). A node's hostPath volumes live in node_dir(node)."""

    def __init__(self, namespace, skip_nodes=()):
        self.namespace = namespace
        WORKDIR.mkdir(parents=True, exist_ok=True)
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"{namespace}-", dir=WORKDIR))
        self.skip_nodes = set(skip_nodes)
        self.logs = {}  # pod name -> {container: output}
        self.exit_codes = {}  # pod name -> {container: exit code}
        self._started = set()
        self._created = []  # mount targets created on this host, removed when the runner stops
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        server = urllib.parse.urlsplit(cluster.api().configuration.host)
        self.api_host, self.api_port = server.hostname, str(server.port)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(RUN_TIMEOUT)
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def node_dir(self, node):
        return self.workdir / "nodes" / node

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self):
        while not self._stop.is_set():
            for pod in cluster.core().list_namespaced_pod(self.namespace, label_selector=f"{LABEL}=true").items:
                name = pod.metadata.name
                if pod.metadata.deletion_timestamp:
                    # Gone at once, as on a kubelet whose containers stopped: kwok's stages skip these pods.
                    self._force_delete(name)
                    continue
                if name in self._started or not pod.spec.node_name or pod.spec.node_name in self.skip_nodes:
                    continue
                self._started.add(name)
                threading.Thread(target=self._run_pod_or_fail, args=(pod,), daemon=True).start()
            self._stop.wait(0.2)

    def _force_delete(self, name):
        with contextlib.suppress(client.exceptions.ApiException):
            cluster.core().delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)

    # -- one pod ----------------------------------------------------------------------------------

    def _run_pod_or_fail(self, pod):
        """A pod the runner cannot start (its ServiceAccount or a Secret gone) fails, as on a kubelet."""
        try:
            self._run_pod(pod)
        except (client.exceptions.ApiException, OSError, subprocess.SubprocessError) as err:
            self.logs[pod.metadata.name] = {"runner": f"could not run the pod: {err}"}
            self._status(pod.metadata.name, {"phase": "Failed"})

    def _run_pod(self, pod):
        name = pod.metadata.name
        foreign = foreign_addresses(pod)
        if foreign:  # a test must never send traffic anywhere but loopback and its own test hosts
            self.logs[name] = {"runner": f"refused: the pod names addresses outside the test: {foreign}"}
            self._status(name, {"phase": "Failed", "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": now()}]})
            return
        started = now()
        self._status(name, {"phase": "Running", "startTime": started, "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": started}]})
        self.logs[name], self.exit_codes[name], statuses = {}, {}, []
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix=f"{name}-") as scratch:
            volumes = self._volumes(pod, pathlib.Path(scratch))
            code = 0
            for container in pod.spec.containers:
                code, output = self._run_container(pod, container, volumes)
                self.logs[name][container.name] = output
                self.exit_codes[name][container.name] = code
                statuses.append({"name": container.name, "ready": False, "restartCount": 0, "image": container.image,
                                 "imageID": "", "state": {"terminated": {
                                     "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                     "message": output[-4000:], "startedAt": started, "finishedAt": now()}}})
                if code != 0:
                    break
        self._status(name, {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": statuses,
                            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}]})

    def _status(self, name, status):
        with contextlib.suppress(client.exceptions.ApiException):  # the pod may be gone already
            cluster.core().patch_namespaced_pod_status(name, self.namespace, {"status": status})

    def _run_container(self, pod, container, volumes):
        env = {"PATH": os.environ["PATH"], "HOME": "/tmp",
               "KUBERNETES_SERVICE_HOST": self.api_host, "KUBERNETES_SERVICE_PORT": self.api_port}
        env.update(self._env(pod, container))
        mounts = [(volumes[m.name], m.mount_path) for m in container.volume_mounts or [] if m.name in volumes]
        # The checkout (with the venv dynamo-hooks runs from) at its own path again, should a volume hide it.
        mounts = sorted(mounts + [(ROOT, str(ROOT))], key=lambda pair: pair[1].count("/"))  # parents first
        command = [*(container.command or ENTRYPOINT), *(expand(a, env) for a in container.args or [])]
        with self._lock:
            self._created += create_mountpoints([target for _, target in mounts])
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", mount_script(len(mounts)), "sh",
                *[str(p) for pair in mounts for p in pair], *command]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        return done.returncode, done.stdout + done.stderr

    # -- environment and volumes ------------------------------------------------------------------

    def _env(self, pod, container):
        env = {}
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = expand(var.value or "", env)
            elif var.value_from.field_ref:
                env[var.name] = field(pod, var.value_from.field_ref.field_path)
            elif var.value_from.secret_key_ref:
                ref = var.value_from.secret_key_ref
                data = cluster.core().read_namespaced_secret(ref.name, self.namespace).data or {}
                env[var.name] = base64.b64decode(data[ref.key]).decode()
            elif var.value_from.config_map_key_ref:
                ref = var.value_from.config_map_key_ref
                env[var.name] = cluster.core().read_namespaced_config_map(ref.name, self.namespace).data[ref.key]
        return env

    def _volumes(self, pod, scratch):
        """{volume name: a directory holding its content}."""
        found = {}
        for volume in pod.spec.volumes or []:
            path = scratch / "volumes" / volume.name
            if volume.host_path:
                path = self.node_dir(pod.spec.node_name) / volume.host_path.path.lstrip("/")
                path.mkdir(parents=True, exist_ok=True)
            elif volume.empty_dir is not None:
                path.mkdir(parents=True)
            elif volume.config_map:
                write_files(path, self._config_map(volume.config_map.name, volume.config_map.optional),
                            volume.config_map.items)
            elif volume.secret:
                write_files(path, self._secret(volume.secret.secret_name), volume.secret.items)
            elif volume.projected:
                path.mkdir(parents=True)
                for source in volume.projected.sources:
                    self._project(pod, source, path)
            else:
                continue
            found[volume.name] = path
        return found

    def _config_map(self, name, optional=False):
        try:
            return cluster.core().read_namespaced_config_map(name, self.namespace).data or {}
        except client.exceptions.ApiException as err:
            if err.status == 404 and optional:
                return {}
            raise

    def _secret(self, name):
        data = cluster.core().read_namespaced_secret(name, self.namespace).data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _project(self, pod, source, path):
        if source.service_account_token:
            token = source.service_account_token
            request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
                audiences=[token.audience] if token.audience else [],
                expiration_seconds=token.expiration_seconds or 3600,
                bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1", name=pod.metadata.name,
                                                               uid=pod.metadata.uid)))
            answer = cluster.core().create_namespaced_service_account_token(pod.spec.service_account_name,
                                                                            self.namespace, request)
            (path / token.path).write_text(answer.status.token)
        elif source.config_map:
            write_files(path, self._config_map(source.config_map.name, source.config_map.optional),
                        source.config_map.items, mkdir=False)
        elif source.downward_api:
            for item in source.downward_api.items:
                (path / item.path).write_text(field(pod, item.field_ref.field_path))


def expand(text, env):
    """$(NAME) references to the environment, as the kubelet expands them in args and env values: an unknown
    name stays as written, and $$ escapes a $."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def foreign_addresses(pod):
    """IPv4 addresses in the pod's commands, args and plain env values that are neither loopback nor a
    test host's (tests/e2e/netns.py)."""
    words = [w for c in pod.spec.containers + (pod.spec.init_containers or [])
             for w in (c.command or []) + (c.args or []) + [e.value or "" for e in c.env or []]]
    found = set()
    for address in re.findall(r"(?<![0-9.])(\d{1,3}(?:\.\d{1,3}){3})(?![0-9])", " ".join(words)):
        ip = ipaddress.IPv4Address(address)
        if not (ip.is_loopback or ip in TEST_NETWORK):
            found.add(address)
    return sorted(found)


def field(pod, path):
    """A downward API field of the pod."""
    return {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid, "spec.nodeName": pod.spec.node_name,
            "spec.serviceAccountName": pod.spec.service_account_name,
            "status.podIP": pod.status.pod_ip or "", "status.hostIP": pod.status.host_ip or ""}[path]


def write_files(path, data, items, mkdir=True):
    if mkdir:
        path.mkdir(parents=True)
    for key, value in data.items():
        targets = [i.path for i in items or [] if i.key == key] if items else [key]
        for target in targets:
            (path / target).parent.mkdir(parents=True, exist_ok=True)
            (path / target).write_text(value)


def mount_script(count):
    """sh lines that bind `count` (source, target) pairs given as positional arguments, then exec the rest.
    Every source is first bound into a private tmpfs: a target such as /tmp may hide a source below it."""
    lines = ["set -e", "mount -t tmpfs runner /mnt"]
    for i in range(count):
        lines += [f"mkdir /mnt/{i}", f'mount --bind "${{{2 * i + 1}}}" /mnt/{i}']
    for i in range(count):
        lines += [f'mkdir -p "${{{2 * i + 2}}}"', f'mount --bind /mnt/{i} "${{{2 * i + 2}}}"']
    return "\n".join(lines + [f"shift {2 * count}", 'exec "$@"']) + "\n"


def create_mountpoints(targets):
    """Create the missing directories of the mount targets on this host; return those created."""
    created = []
    for target in sorted(targets):
        missing = []
        current = pathlib.Path(target)
        while not current.exists():
            missing.append(current)
            current = current.parent
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
    return created
