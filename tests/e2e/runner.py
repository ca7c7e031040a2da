"""A kubelet for the chart's own pods: it runs, as local processes, the pods labelled
dynamo-offloading.test/runner=true (kwok's stages leave them alone) and reports their real outcome.

For each such pod scheduled to a node it starts the containers of the hooks image in order, as a kubelet
would: the command (the image's entrypoint, `dynamo-hooks`, when the spec gives only args), the environment
with its valueFrom references resolved, and the volumes written to a directory each (ConfigMaps, Secrets,
projected ServiceAccount tokens minted with the TokenRequest API for the pod's ServiceAccount, emptyDirs; a
hostPath volume maps to a directory of the test per node) and bind-mounted at their mount paths in a mount
namespace of the container's own. A native sidecar (an init container with restartPolicy Always) runs in the
background and its exec startup probe holds the containers after it. Containers of other images (TRT-LLM,
the 3FS FUSE client) cannot run here: they are reported running, and a test plays their part with `exec`.

The API server is reached at the address the kubeconfig names. A pod that only runs to completion goes
Running, then Succeeded or Failed with each container's exit code and the end of its log; one with a
container that keeps running stays Running and Ready until it is deleted. Logs stay in `logs` for the test.

A node's hostPath directories sit under one mount shared with the host, and every other mount is made
private in the container's namespace: a mount the container detaches under a hostPath volume is detached on
this host too (Bidirectional propagation), while its own bind mounts never leave its namespace."""

import base64
import contextlib
import dataclasses
import datetime
import ipaddress
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse

from kubernetes import client

from testbed import cluster
from testbed.helm import chart_defaults
from tests.e2e.netns import TEST_NETWORK
from tests.helm import ROOT

LABEL = "dynamo-offloading.test/runner"
ENTRYPOINT = [str(ROOT / ".venv" / "bin" / "dynamo-hooks")]  # the hooks image's ENTRYPOINT
HOOKS_REPOSITORY = chart_defaults()["hooks"]["image"]["repository"]
RUN_TIMEOUT = 300
PROBE_EVERY = 0.5
WORKDIR = ROOT / "build" / "runner"


def now():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def runs_here(container):
    """Containers of the hooks image run here; any other image (TRT-LLM, 3FS FUSE) cannot."""
    return container.image.rsplit("/", 1)[-1].split(":")[0].split("@")[0] == HOOKS_REPOSITORY


def is_sidecar(container):
    return container.restart_policy == "Always"


@dataclasses.dataclass
class RunningPod:
    pod: object
    scratch: pathlib.Path
    volumes: dict
    processes: dict = dataclasses.field(default_factory=dict)  # container -> Popen of a sidecar


class PodRunner:
    """Runs the runner-labelled pods of `namespace` until stopped. `skip_nodes`: nodes whose pods it never
    starts (a node that is down). A node's hostPath volumes live in node_dir(node)."""

    def __init__(self, namespace, skip_nodes=()):
        self.namespace = namespace
        WORKDIR.mkdir(parents=True, exist_ok=True)
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"{namespace}-", dir=WORKDIR))
        self.nodes_dir = self.workdir / "nodes"
        self.nodes_dir.mkdir()
        self.skip_nodes = set(skip_nodes)
        self.logs = {}  # pod name -> {container: output}
        self.exit_codes = {}  # pod name -> {container: exit code}
        self._started = set()  # pod uids: a StatefulSet's replacement pod keeps its predecessor's name
        self._pods = {}  # pod name -> RunningPod, while it runs
        self._created = []  # mount targets created on this host, removed when the runner stops
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        server = urllib.parse.urlsplit(cluster.api().configuration.host)
        self.api_host, self.api_port = server.hostname, str(server.port)

    def __enter__(self):
        # The nodes' directories: one mount of their own, shared, so that a container's namespace holds a
        # peer of it (see mount_script).
        subprocess.run(["mount", "--bind", self.nodes_dir, self.nodes_dir], check=True)
        subprocess.run(["mount", "--make-shared", self.nodes_dir], check=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(RUN_TIMEOUT)
        for name in list(self._pods):
            self._stop_pod(name)
        subprocess.run(["umount", "--lazy", "--recursive", self.nodes_dir], check=False)
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def node_dir(self, node):
        """The directory that stands for `node`'s root filesystem, for its hostPath volumes."""
        path = self.nodes_dir / node
        path.mkdir(exist_ok=True)
        return path

    def exec(self, pod_name, container_name, command, timeout=RUN_TIMEOUT):
        """`kubectl exec`: `command` with the container's environment and volumes (a container that cannot
        run here, played by the test). Waits for the pod to be started first."""
        running = cluster.wait_until(lambda: self._pods.get(pod_name), f"pod {pod_name} started by the runner")
        container = next(c for c in running.pod.spec.containers + (running.pod.spec.init_containers or [])
                         if c.name == container_name)
        argv, env = self._command(running, container, command)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self):
        while not self._stop.is_set():
            for pod in cluster.core().list_namespaced_pod(self.namespace, label_selector=f"{LABEL}=true").items:
                self._visit(pod)
            self._stop.wait(0.2)

    def _visit(self, pod):
        name = pod.metadata.name
        if pod.metadata.deletion_timestamp:
            # Gone at once, as on a kubelet whose containers stopped: kwok's stages skip these pods.
            self._stop_pod(name)
            self._force_delete(name, pod.metadata.uid)
        elif pod.metadata.uid not in self._started and pod.spec.node_name and pod.spec.node_name not in self.skip_nodes:
            self._started.add(pod.metadata.uid)
            threading.Thread(target=self._run_pod_or_fail, args=(pod,), daemon=True).start()

    def _force_delete(self, name, uid):
        """Delete this pod, not a replacement of the same name (the API server takes the options from the
        body alone when there is one)."""
        with contextlib.suppress(client.exceptions.ApiException):
            cluster.core().delete_namespaced_pod(name, self.namespace, body=client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)))

    # -- one pod ----------------------------------------------------------------------------------

    def _run_pod_or_fail(self, pod):
        """A pod the runner cannot start (its ServiceAccount or a Secret gone) fails, as on a kubelet."""
        try:
            self._run_pod(pod)
        except Exception as err:  # noqa: BLE001 - any error of the runner's own fails the pod, never hangs Helm
            self.logs[pod.metadata.name] = {"runner": f"could not run the pod: {err!r}"}
            self._status(pod.metadata.name, {"phase": "Failed"})
            self._stop_pod(pod.metadata.name)

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
            {"type": "Ready", "status": "False", "lastTransitionTime": started}]})
        self.logs[name], self.exit_codes[name] = {}, {}
        scratch = pathlib.Path(tempfile.mkdtemp(dir=self.workdir, prefix=f"{name}-"))
        running = RunningPod(pod, scratch, self._volumes(pod, scratch))
        self._pods[name] = running
        init_statuses, statuses, code = [], [], 0
        for container in pod.spec.init_containers or []:
            if is_sidecar(container):
                code = self._start_sidecar(running, container) if runs_here(container) else 0
                init_statuses.append(container_status(container, started, None if code == 0 else code))
            elif runs_here(container):
                code = self._run_to_end(running, container, started, init_statuses)
            if code != 0:
                break
        keeps_running = False
        for container in pod.spec.containers if code == 0 else ():
            if not runs_here(container):
                keeps_running = True
                statuses.append(container_status(container, started, None))
                continue
            code = self._run_to_end(running, container, started, statuses)
            if code != 0:
                break
        if keeps_running and code == 0:
            self._status(name, {"phase": "Running", "initContainerStatuses": init_statuses,
                                "containerStatuses": statuses, "conditions": [
                                    {"type": "Ready", "status": "True", "lastTransitionTime": now()}]})
            return
        self._stop_pod(name)
        self._status(name, {"phase": "Succeeded" if code == 0 else "Failed", "initContainerStatuses": init_statuses,
                            "containerStatuses": statuses,
                            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}]})

    def _run_to_end(self, running, container, started, statuses):
        argv, env = self._command(running, container)
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        name = running.pod.metadata.name
        output = done.stdout + done.stderr
        self.logs[name][container.name] = output
        self.exit_codes[name][container.name] = done.returncode
        statuses.append(container_status(container, started, done.returncode, output))
        return done.returncode

    def _start_sidecar(self, running, container):
        """Start the sidecar in the background; 0 once its startup probe passes, 1 if it never does."""
        argv, env = self._command(running, container)
        log = running.scratch / f"{container.name}.log"
        with log.open("w") as out:
            running.processes[container.name] = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                                 start_new_session=True)
        probe = container.startup_probe
        if probe is None or probe._exec is None:  # `exec` is `_exec` in the client's models
            return 0
        budget = (probe.initial_delay_seconds or 0) + (probe.period_seconds or 10) * (probe.failure_threshold or 3)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline and running.processes[container.name].poll() is None:
            probe_argv, probe_env = self._command(running, container, probe._exec.command)
            if subprocess.run(probe_argv, env=probe_env, capture_output=True, timeout=RUN_TIMEOUT).returncode == 0:
                return 0
            time.sleep(PROBE_EVERY)
        return 1

    def _stop_pod(self, name):
        """Stop the pod's sidecars and keep their logs."""
        running = self._pods.pop(name, None)
        if running is None:
            return
        for container, process in running.processes.items():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            self.logs.setdefault(name, {})[container] = (running.scratch / f"{container}.log").read_text()
            self.exit_codes.setdefault(name, {})[container] = process.returncode
        shutil.rmtree(running.scratch, ignore_errors=True)

    def _status(self, name, status):
        with contextlib.suppress(client.exceptions.ApiException):  # the pod may be gone already
            cluster.core().patch_namespaced_pod_status(name, self.namespace, {"status": status})

    def _command(self, running, container, command=None):
        """The argv that runs `command` (by default the container's own) in a mount namespace holding the
        container's volumes, and its environment."""
        pod, volumes = running.pod, running.volumes
        env = {"PATH": os.environ["PATH"], "HOME": "/tmp",
               "KUBERNETES_SERVICE_HOST": self.api_host, "KUBERNETES_SERVICE_PORT": self.api_port}
        env.update(self._env(pod, container))
        mounts = [(volumes[m.name], m.mount_path) for m in container.volume_mounts or [] if m.name in volumes]
        # The checkout (with the venv dynamo-hooks runs from) at its own path again, should a volume hide it.
        mounts = sorted(mounts + [(ROOT, str(ROOT))], key=lambda pair: pair[1].count("/"))  # parents first
        if command is None:
            command = [*(container.command or ENTRYPOINT), *(expand(a, env) for a in container.args or [])]
        with self._lock:
            self._created += create_mountpoints([target for _, target in mounts])
        argv = ["unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", mount_script(len(mounts)),
                "sh", str(self.nodes_dir), *[str(p) for pair in mounts for p in pair], *command]
        return argv, env

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


def container_status(container, started, exit_code, output=""):
    """A containerStatus: running while `exit_code` is None, else terminated with the end of its log."""
    if exit_code is None:
        state = {"running": {"startedAt": started}}
    else:
        state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                "message": output[-4000:], "startedAt": started, "finishedAt": now()}}
    return {"name": container.name, "ready": exit_code is None, "started": exit_code is None, "restartCount": 0,
            "image": container.image, "imageID": "", "state": state}


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
    """sh lines that, given the nodes' directory and `count` (source, target) pairs as positional arguments,
    make every mount private but the nodes' (so that no mount made here reaches the host, while a detach
    under a hostPath volume does), bind each source at its target with the mounts below it, then exec the
    rest. Every source is first bound into a private tmpfs: a target such as /tmp may hide a source below it."""
    lines = ["set -e", 'nodes="$1"', "shift",
             "while read -r _ _ _ _ point _; do",
             '  case "$point" in "$nodes"|"$nodes"/*) ;; *) mount --make-private "$point" 2>/dev/null || true ;; esac',
             "done < /proc/self/mountinfo",
             "mount -t tmpfs runner /mnt"]
    for i in range(count):
        lines += [f"mkdir /mnt/{i}", f'mount --rbind "${{{2 * i + 1}}}" /mnt/{i}']
    for i in range(count):
        lines += [f'mkdir -p "${{{2 * i + 2}}}"', f'mount --rbind /mnt/{i} "${{{2 * i + 2}}}"']
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
