"""A kubelet for the chart's own pods: it runs, as local processes, the pods labelled
dynamo-offloading.test/runner=true (kwok's stages leave them alone) and reports their real state.

For each such pod scheduled to a node it runs the containers as a kubelet would: plain init containers in
order to their end, native sidecars (init containers with restartPolicy Always) in the background, each
holding the next until its startup probe passes, then the containers. Each gets its command (the image's
entrypoint when the spec gives only args), its environment with valueFrom references resolved, and its volumes
written to a directory each (ConfigMaps, Secrets, projected ServiceAccount tokens minted with the TokenRequest
API for the pod's ServiceAccount, emptyDirs; a hostPath volume maps to a directory of the test per node),
bind-mounted at their mount paths in a mount namespace of the container's own. What each image runs here is
in images.py: by default only the hooks image; a serving runner runs every image of the release, Dynamo's
included, and gives each pod a network of its own.

A pod that runs to completion (restartPolicy Never or OnFailure) goes Running, then Succeeded or Failed with
each container's exit code and the end of its log. Any other pod keeps running: its startup, liveness and
readiness probes (exec, HTTP, TCP) run against its processes, its Ready condition follows them, and a
container that exits or fails its liveness probe is restarted (restartCount, lastState). A probe fails once
it has failed for failureThreshold x periodSeconds, the span of the kubelet's consecutive failures, and is
tried every TICK seconds meanwhile. A deleted pod's containers get their preStop hooks, SIGTERM, then SIGKILL.
Logs stay in `logs` for the test.

Network: by default the pods run in this host's network namespace. A serving runner puts each pod in a test
host of its own (netns.py), and the pods on a node's host network in that node's test host: `status.podIP`
and `status.hostIP` are those addresses, so Services' EndpointSlices lead to the processes, and Service names
resolve through hosts files (cluster_dns.py). The API server's port on 127.0.0.1 is relayed into every test
host, so in-cluster clients reach it at the address the kubeconfig names, with its certificate.

Mounts: a node's hostPath directories sit under one mount shared with the host, and every other mount is made
private in the container's namespace: a mount the container makes or detaches under a hostPath volume is
made or detached on this host and in the node's other containers too (Bidirectional propagation), while its
own bind mounts never leave its namespace."""

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from kubernetes import client

from testbed import cluster, netns
from testbed import images as images_
from testbed.cluster_dns import HostsFiles
from testbed.helm import ROOT
from testbed.netns import TEST_NETWORK, relay

LABEL = "dynamo-offloading.test/runner"
RUN_TIMEOUT = 300
TICK = 0.5
BACKOFF = (1, 2, 4, 8)  # seconds before each restart of a container: the kubelet's 10 s doubling to 5 min, shortened
GRACE_CAP = 10  # seconds a container may take to stop, whatever its pod allows
DNS_EVERY = 1.0
WORKDIR = ROOT / "build" / "runner"


def now():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Container:
    """One container of a pod as it runs here: its process, its probes and what its status says."""

    def __init__(self, spec, image, init=False):
        self.spec = spec
        self.name = spec.name
        self.image = image  # images.Image, or None: cannot run here
        self.init = init
        self.sidecar = init and spec.restart_policy == "Always"
        self.process = None
        self.started_at = None
        self.started = False  # its startup probe passed (or it has none)
        self.ready = False
        self.restarts = 0
        self.exit_code = None  # of its last run
        self.last_state = None  # a terminated state, once it ran and stopped
        self.restart_at = None  # monotonic time of its next start, after an exit
        self.failing_since = {}  # probe -> monotonic time of the first failure in a row
        self.born = 0.0  # monotonic time of its last start
        self.probe_messages = {}  # probe -> its last failure's message, told once as an event
        self.env = {}

    @property
    def runs(self):
        return self.image is not None

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def status(self):
        if self.image is None:  # reported running: a test plays it
            state, ready, started = {"running": {"startedAt": self.started_at}}, True, True
        elif self.alive():
            state, ready, started = {"running": {"startedAt": self.started_at}}, self.ready, self.started
        elif self.exit_code is not None and self.restart_at is None:
            state, ready, started = self.last_state, False, False
        else:
            reason = "CrashLoopBackOff" if self.restarts else "PodInitializing"
            state, ready, started = {"waiting": {"reason": reason}}, False, False
        status = {"name": self.name, "ready": ready, "started": started, "restartCount": self.restarts,
                  "image": self.spec.image, "imageID": "", "state": state}
        if self.last_state and self.restarts:
            status["lastState"] = self.last_state
        return status


class Pod:
    """A pod the runner runs: its containers, scratch directory, volumes and network."""

    def __init__(self, obj, scratch):
        self.obj = obj
        self.name = obj.metadata.name
        self.scratch = scratch
        self.volumes = {}
        self.inits = []
        self.containers = []
        self.host = None  # the test host of its own network, if it has one
        self.netns = None  # the test host it runs in: its own, or its node's
        self.pod_ip = self.host_ip = None
        self.stop = threading.Event()
        self.thread = None
        self.phase = "Pending"
        self.initialized = False
        self.started_at = now()
        self.conditions = {}  # type -> (status, lastTransitionTime)
        self.reported = None

    @property
    def keeps_running(self):
        """Whether its containers are restarted when they end (restartPolicy Always), not run once."""
        return self.obj.spec.restart_policy == "Always"

    def everything(self):
        return self.inits + self.containers


class PodRunner:
    """Runs the runner-labelled pods of `namespace` until stopped. `skip_nodes`: nodes whose pods it never
    starts (a node that is down). `serve`: the release's values (over the chart's defaults) when every image
    of the release should run (images.serving), each pod in a test host; by default only the hooks image
    runs, in this host's network. A node's hostPath volumes live in node_dir(node)."""

    def __init__(self, namespace, skip_nodes=(), serve=None):
        self.namespace = namespace
        WORKDIR.mkdir(parents=True, exist_ok=True)
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"{namespace}-", dir=WORKDIR))
        self.nodes_dir = self.workdir / "nodes"
        self.nodes_dir.mkdir()
        self.skip_nodes = set(skip_nodes)
        self.networked = serve is not None
        self.images = images_.serving(serve, self.workdir) if self.networked else images_.hooks_only()
        self.hosts_files = HostsFiles(self.workdir / "dns") if self.networked else None
        self.logs = {}  # pod name -> {container: output}, once it ended
        self.exit_codes = {}  # pod name -> {container: exit code}
        self._started = set()  # pod uids: a StatefulSet's replacement pod keeps its predecessor's name
        self._pods = {}  # pod name -> Pod, while it runs
        self._node_hosts = {}  # node -> TestHost of its host network
        self._created = []  # mount targets created on this host, removed when the runner stops
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        server = urllib.parse.urlsplit(cluster.api().configuration.host)
        self.api_host, self.api_port = server.hostname, server.port

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
        running = list(self._pods.values())
        for pod in running:
            pod.stop.set()  # each pod's own thread stops it
        for pod in running:
            pod.thread.join(RUN_TIMEOUT)
        for host in self._node_hosts.values():
            host.delete()
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

    def node_address(self, node):
        """The address of `node`'s host network (a serving runner's test host)."""
        return self._node_host(node).address

    def log(self, pod_name, container_name):
        """What a container printed so far, over all its runs."""
        pod = self._pods.get(pod_name)
        if pod is None:
            return self.logs.get(pod_name, {}).get(container_name, "")
        path = pod.scratch / f"{container_name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def describe(self, lines=25):
        """The end of every container's log, running or ended: what a failed test shows."""
        names = sorted(set(self._pods) | set(self.logs))
        out = []
        for name in names:
            pod = self._pods.get(name)
            containers = [c.name for c in pod.everything()] if pod else list(self.logs.get(name, {}))
            for container in containers + (["runner"] if "runner" in self.logs.get(name, {}) else []):
                text = self.log(name, container) if container != "runner" else self.logs[name]["runner"]
                out.append(f"--- {name}/{container}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)

    def kill(self, pod_name, container_name):
        """SIGKILL a running container's processes, as the OOM killer would: the pod restarts it."""
        pod = cluster.wait_until(lambda: self._pods.get(pod_name), f"pod {pod_name} started by the runner")
        container = next(c for c in pod.everything() if c.name == container_name)
        process = cluster.wait_until(lambda: container.alive() and container.process, f"{container_name} running")
        os.killpg(process.pid, 9)

    def exec(self, pod_name, container_name, command, timeout=RUN_TIMEOUT):
        """`kubectl exec`: `command` in the container's namespaces, with its environment (also for a container
        that cannot run here, played by the test). Waits for the pod to be started first."""
        pod = cluster.wait_until(lambda: self._pods.get(pod_name), f"pod {pod_name} started by the runner")
        container = next(c for c in pod.everything() if c.name == container_name)
        cluster.wait_until(lambda: container.env or not container.runs, f"container {container_name} started")
        argv, env = self._enter(pod, container, command)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self):
        last_dns = 0.0
        while not self._stop.is_set():
            if self.networked and time.monotonic() - last_dns > DNS_EVERY:
                with contextlib.suppress(client.exceptions.ApiException):
                    self.hosts_files.refresh()
                last_dns = time.monotonic()
            for pod in cluster.core().list_namespaced_pod(self.namespace, label_selector=f"{LABEL}=true").items:
                self._visit(pod)
            self._stop.wait(0.2)

    def _visit(self, obj):
        name = obj.metadata.name
        running = self._pods.get(name)
        if obj.metadata.deletion_timestamp:
            if running is not None and running.obj.metadata.uid == obj.metadata.uid:
                if not running.stop.is_set():
                    running.stop.set()  # the pod's own thread stops it, then deletes it
            elif obj.metadata.uid not in self._started or running is None:
                self._force_delete(name, obj.metadata.uid)
        elif obj.metadata.uid not in self._started and obj.spec.node_name and obj.spec.node_name not in self.skip_nodes:
            if running is not None:  # its predecessor of the same name has not finished stopping
                return
            self._started.add(obj.metadata.uid)
            pod = Pod(obj, pathlib.Path(tempfile.mkdtemp(dir=self.workdir, prefix=f"{name}-")))
            self._pods[name] = pod
            pod.thread = threading.Thread(target=self._run_pod_or_fail, args=(pod,), daemon=True)
            pod.thread.start()

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
            self.logs.setdefault(pod.name, {})["runner"] = f"could not run the pod: {err!r}"
            pod.phase = "Failed"
            self._report(pod)
        finally:
            self._terminate(pod)
            if pod.stop.is_set():
                self._force_delete(pod.name, pod.obj.metadata.uid)

    def _run_pod(self, pod):
        foreign = foreign_addresses(pod.obj)
        if foreign:  # a test must never send traffic anywhere but loopback and its own test hosts
            self.logs[pod.name] = {"runner": f"refused: the pod names addresses outside the test: {foreign}"}
            pod.phase = "Failed"
            self._report(pod)
            return
        spec = pod.obj.spec
        pod.inits = [Container(c, self._image(c), init=True) for c in spec.init_containers or []]
        pod.containers = [Container(c, self._image(c)) for c in spec.containers]
        for container in pod.everything():
            if not container.runs:
                container.started_at = pod.started_at
        self._network(pod)
        pod.volumes = self._volumes(pod)
        pod.phase = "Running"
        self._report(pod)
        for container in pod.inits:
            if not self._initialize(pod, container):
                return
        pod.initialized = True
        if not pod.keeps_running:
            self._run_to_completion(pod)
            return
        for container in pod.containers:
            if container.runs:
                self._start(pod, container)
        while not pod.stop.is_set():
            for container in pod.everything():
                self._supervise(pod, container)
            self._report(pod)
            pod.stop.wait(TICK)

    def _initialize(self, pod, container):
        """Run an init container to its end, or start a sidecar and wait for its startup probe; False when the
        pod cannot go on (a failed init container of a pod that is not restarted, or the pod deleted)."""
        if not container.runs:
            return True
        while not pod.stop.is_set():
            if container.sidecar:
                if not container.alive() and container.restart_at is None:
                    self._start(pod, container)
                self._supervise(pod, container)
                if container.started:
                    return True
            else:
                code = self._run_to_end(pod, container)
                if code == 0:
                    return True
                if not pod.keeps_running:
                    pod.phase = "Failed"
                    return False
                time.sleep(BACKOFF[min(container.restarts, len(BACKOFF) - 1)])
                container.restarts += 1
            self._report(pod)
            pod.stop.wait(TICK)
        return False

    def _run_to_completion(self, pod):
        """A pod whose containers run once: each to its end, then Succeeded or Failed."""
        code = 0
        for container in pod.containers:
            if container.runs and code == 0:
                code = self._run_to_end(pod, container)
        pod.phase = "Succeeded" if code == 0 else "Failed"
        self._stop_containers(pod, pod.inits)
        self._report(pod)

    def _run_to_end(self, pod, container):
        self._start(pod, container)
        try:
            container.process.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(container.process.pid, 9)
            container.process.wait()
        self._exited(pod, container)
        container.restart_at = None
        return container.exit_code

    def _start(self, pod, container):
        argv, env = self._command(pod, container)
        container.env = env
        with (pod.scratch / f"{container.name}.log").open("a") as out:
            container.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, start_new_session=True)
        container.started_at = now()
        container.started = container.spec.startup_probe is None
        container.ready = False
        container.restart_at = None
        container.failing_since = {}
        container.born = time.monotonic()

    def _exited(self, pod, container):
        """Record a container's end: its exit code, its log so far, and its terminated state."""
        code = container.process.returncode
        container.exit_code = code
        output = (pod.scratch / f"{container.name}.log").read_text(errors="replace")
        self.logs.setdefault(pod.name, {})[container.name] = output
        self.exit_codes.setdefault(pod.name, {})[container.name] = code
        container.last_state = {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error", "message": output[-4000:],
            "startedAt": container.started_at, "finishedAt": now()}}
        container.process = None
        container.started = container.ready = False

    def _supervise(self, pod, container):
        """One tick of a long-running container: restart it when it ended and its backoff passed, else run its
        probes."""
        if not container.runs:
            return
        if container.process is not None and container.process.poll() is not None:
            self._exited(pod, container)
            container.restart_at = time.monotonic() + BACKOFF[min(container.restarts, len(BACKOFF) - 1)]
        if container.process is None:
            if container.restart_at is not None and time.monotonic() >= container.restart_at:
                container.restarts += 1
                self._start(pod, container)
            return
        spec = container.spec
        if not container.started:
            verdict = self._probe(pod, container, "startup", spec.startup_probe)
            if verdict is True:
                container.started = True
            elif verdict is False:
                self._restart(pod, container, "its startup probe failed")
            return
        if self._probe(pod, container, "liveness", spec.liveness_probe) is False:
            self._restart(pod, container, "its liveness probe failed")
            return
        readiness = self._probe(pod, container, "readiness", spec.readiness_probe)
        if readiness is not None:
            container.ready = readiness
        elif spec.readiness_probe is None:
            container.ready = True

    def _probe(self, pod, container, kind, probe):
        """True when the probe passes, False when it has failed for its whole budget, None while undecided
        (not due yet, or failing within the budget)."""
        if probe is None:
            return None
        if time.monotonic() - container.born < (probe.initial_delay_seconds or 0):
            return None
        passed, message = self._try(pod, container, probe)
        if passed:
            container.failing_since.pop(kind, None)
            container.probe_messages.pop(kind, None)
            return True
        if container.probe_messages.get(kind) != message:  # as the kubelet's events, without the repeats
            container.probe_messages[kind] = message
            self._event(pod, container, "Unhealthy", f"{kind.capitalize()} probe failed: {message}")
        first = container.failing_since.setdefault(kind, time.monotonic())
        budget = (probe.period_seconds or 10) * (probe.failure_threshold or 3)
        if kind == "readiness":
            return False if time.monotonic() - first >= (probe.period_seconds or 10) * (
                (probe.failure_threshold or 3) - 1) else None
        return False if time.monotonic() - first >= budget else None

    def _try(self, pod, container, probe):
        """(passed, what the kubelet would say of a failure)."""
        timeout = probe.timeout_seconds or 1
        try:
            if probe._exec is not None:  # `exec` is `_exec` in the client's models
                argv, env = self._enter(pod, container, probe._exec.command)
                done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout + 5)
                return done.returncode == 0, (done.stdout + done.stderr).strip()
            if probe.http_get is not None:
                get = probe.http_get
                port = container_port(container.spec, get.port)
                url = f"{(get.scheme or 'HTTP').lower()}://{get.host or pod.pod_ip}:{port}{get.path or '/'}"
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(url, timeout=timeout) as answer:
                    return 200 <= answer.status < 400, f"HTTP probe failed with statuscode: {answer.status}"
            if probe.tcp_socket is not None:
                port = container_port(container.spec, probe.tcp_socket.port)
                with socket.create_connection((probe.tcp_socket.host or pod.pod_ip, port), timeout=timeout):
                    return True, ""
        except urllib.error.HTTPError as err:
            return False, f"HTTP probe failed with statuscode: {err.code}"
        except (OSError, subprocess.TimeoutExpired, urllib.error.URLError) as err:
            return False, str(err)
        raise ValueError(f"{pod.name}/{container.name}: a probe of a kind the runner does not run: {probe}")

    def _event(self, pod, container, reason, message):
        """A Warning event about the container, as the kubelet records one."""
        where = "spec.initContainers" if container.init else "spec.containers"
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{pod.name}."), reason=reason, message=message[-1024:],
            type="Warning", source=client.V1EventSource(component="kubelet", host=pod.obj.spec.node_name),
            involved_object=client.V1ObjectReference(kind="Pod", api_version="v1", namespace=self.namespace,
                                                     name=pod.name, uid=pod.obj.metadata.uid,
                                                     field_path=f"{where}{{{container.name}}}"),
            first_timestamp=now(), last_timestamp=now(), count=1)
        with contextlib.suppress(client.exceptions.ApiException):
            cluster.core().create_namespaced_event(self.namespace, event)

    def _restart(self, pod, container, why):
        with (pod.scratch / f"{container.name}.log").open("a") as out:
            out.write(f"[runner] restarting {container.name}: {why}\n")
        self._stop_containers(pod, [container])
        container.restart_at = time.monotonic() + BACKOFF[min(container.restarts, len(BACKOFF) - 1)]

    def _stop_containers(self, pod, containers, grace=GRACE_CAP):
        """Run each live container's preStop hook, SIGTERM it, and SIGKILL what is left after `grace`."""
        live = [c for c in containers if c.alive()]
        for container in live:
            hook = container.spec.lifecycle and container.spec.lifecycle.pre_stop
            if hook is not None and hook._exec is not None:
                argv, env = self._enter(pod, container, hook._exec.command)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    subprocess.run(argv, env=env, capture_output=True, timeout=grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.process.pid, 15)
        deadline = time.monotonic() + grace
        for container in live:
            try:
                container.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, 9)
                container.process.wait()
            self._exited(pod, container)

    def _terminate(self, pod):
        """Stop the pod's containers (its containers, then its sidecars, last first) and keep their logs."""
        if self._pods.get(pod.name) is not pod:
            return
        grace = min(GRACE_CAP, pod.obj.spec.termination_grace_period_seconds or GRACE_CAP)
        self._stop_containers(pod, pod.containers, grace)
        self._stop_containers(pod, list(reversed(pod.inits)), grace)
        for container in pod.everything():
            path = pod.scratch / f"{container.name}.log"
            if path.exists():
                self.logs.setdefault(pod.name, {})[container.name] = path.read_text(errors="replace")
        if pod.host is not None:
            pod.host.delete()
        shutil.rmtree(pod.scratch, ignore_errors=True)
        del self._pods[pod.name]

    def _report(self, pod):
        """Patch the pod's status when what it says changed."""
        inits = [c for c in pod.inits if c.runs or c.sidecar]
        ready = pod.phase == "Running" and pod.initialized and all(c.status()["ready"] for c in pod.containers) \
            and all(c.status()["ready"] for c in inits if c.sidecar)
        for kind, value in (("Initialized", pod.initialized), ("ContainersReady", ready), ("Ready", ready)):
            if pod.conditions.get(kind, (None,))[0] != str(value):
                pod.conditions[kind] = (str(value), now())
        status = {"phase": pod.phase, "startTime": pod.started_at,
                  "initContainerStatuses": [c.status() for c in inits],
                  "containerStatuses": [c.status() for c in pod.containers],
                  "conditions": [{"type": kind, "status": value, "lastTransitionTime": stamp}
                                 for kind, (value, stamp) in pod.conditions.items()]}
        if pod.pod_ip:
            status.update(podIP=pod.pod_ip, podIPs=[{"ip": pod.pod_ip}], hostIP=pod.host_ip,
                          hostIPs=[{"ip": pod.host_ip}])
        summary = json.dumps(status, sort_keys=True)
        if summary == pod.reported:
            return
        pod.reported = summary
        with contextlib.suppress(client.exceptions.ApiException):  # the pod may be gone already
            cluster.core().patch_namespaced_pod_status(pod.name, self.namespace, {"status": status})

    # -- network ----------------------------------------------------------------------------------

    def _network(self, pod):
        """A serving runner's pods: on their node's host network, or in a test host of their own."""
        if not self.networked:
            return
        node = self._node_host(pod.obj.spec.node_name)
        if pod.obj.spec.host_network:
            pod.pod_ip = pod.host_ip = node.address
            pod.netns = node
        else:
            pod.host = self._test_host()
            pod.pod_ip, pod.host_ip = pod.host.address, node.address
            pod.netns = pod.host

    def _node_host(self, node):
        with self._lock:
            if node not in self._node_hosts:
                self._node_hosts[node] = self._test_host()
            return self._node_hosts[node]

    def _test_host(self):
        """A test host where in-cluster clients reach the API server at its usual address."""
        host = netns.create_host()
        relay(host.listen(self.api_port, self.api_host), (self.api_host, self.api_port), host.closed)
        return host

    # -- commands, environment and volumes --------------------------------------------------------

    def _image(self, spec):
        return images_.lookup(self.images, spec.image)

    def _command(self, pod, container, command=None):
        """The argv that runs `command` (by default the container's own) in a mount namespace holding the
        container's volumes (and, in a test host, the pod's network), and its environment."""
        image = container.image or images_.HOOKS
        env = {"HOME": "/tmp", **images_.environment(image),
               "KUBERNETES_SERVICE_HOST": self.api_host, "KUBERNETES_SERVICE_PORT": str(self.api_port)}
        env.update(self._env(pod, container.spec))
        volumes = pod.volumes
        mounts = [(volumes[m.name], m.mount_path) for m in container.spec.volume_mounts or [] if m.name in volumes]
        mounts += [(pathlib.Path(source), target) for source, target in image.binds]
        if self.networked:
            mounts += [(self.hosts_files.path(self.namespace), "/etc/hosts"),
                       (self.hosts_files.resolv_conf, "/etc/resolv.conf")]
        # The checkout (with the venvs and the stand-ins) at its own path again, should a volume hide it.
        mounts = sorted(mounts + [(ROOT, str(ROOT))], key=lambda pair: pair[1].count("/"))  # parents first
        if command is None:
            command = [*(container.spec.command or image.entrypoint),
                       *(expand(a, env) for a in container.spec.args or [])]
        with self._lock:
            self._created += create_mountpoints([target for source, target in mounts if source.is_dir()])
        network = list(pod.netns.prefix) if pod.netns else []
        argv = [*network, "unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c",
                mount_script(len(mounts)), "sh", str(self.nodes_dir), *[str(p) for pair in mounts for p in pair],
                *command]
        return argv, env

    def _enter(self, pod, container, command):
        """The argv that runs `command` in a running container's namespaces (a new namespace like its own
        when it does not run), and its environment."""
        if container.alive():
            return ["nsenter", f"--target={container.process.pid}", "--mount", "--net", "--", *command], \
                container.env
        return self._command(pod, container, command)

    def _env(self, pod, spec):
        env = {}
        for var in spec.env or []:
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

    def _volumes(self, pod):
        """{volume name: a directory holding its content}."""
        found = {}
        for volume in pod.obj.spec.volumes or []:
            path = pod.scratch / "volumes" / volume.name
            if volume.host_path:
                path = self.node_dir(pod.obj.spec.node_name) / volume.host_path.path.lstrip("/")
                if volume.host_path.type != "CharDevice":
                    path.mkdir(parents=True, exist_ok=True)
                else:
                    path = pathlib.Path(volume.host_path.path)  # a device of this host: /dev/fuse
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
        obj = pod.obj
        if source.service_account_token:
            token = source.service_account_token
            request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
                audiences=[token.audience] if token.audience else [],
                expiration_seconds=token.expiration_seconds or 3600,
                bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1", name=obj.metadata.name,
                                                               uid=obj.metadata.uid)))
            answer = cluster.core().create_namespaced_service_account_token(obj.spec.service_account_name,
                                                                            self.namespace, request)
            (path / token.path).write_text(answer.status.token)
        elif source.config_map:
            write_files(path, self._config_map(source.config_map.name, source.config_map.optional),
                        source.config_map.items, mkdir=False)
        elif source.downward_api:
            for item in source.downward_api.items:
                (path / item.path).write_text(field(pod, item.field_ref.field_path))


def container_port(spec, port):
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    return next(p.container_port for p in spec.ports or [] if p.name == port)


def expand(text, env):
    """$(NAME) references to the environment, as the kubelet expands them in args and env values: an unknown
    name stays as written, and $$ escapes a $."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def foreign_addresses(pod):
    """IPv4 addresses in the pod's commands, args and plain env values that are neither loopback nor a
    test host's (testbed/netns.py)."""
    words = [w for c in pod.spec.containers + (pod.spec.init_containers or [])
             for w in (c.command or []) + (c.args or []) + [e.value or "" for e in c.env or []]]
    found = set()
    for address in re.findall(r"(?<![0-9.])(\d{1,3}(?:\.\d{1,3}){3})(?![0-9])", " ".join(words)):
        ip = ipaddress.IPv4Address(address)
        if not (ip.is_loopback or ip in TEST_NETWORK):
            found.add(address)
    return sorted(found)


def field(pod, path):
    """A downward API field of the pod, with the addresses the runner gave it."""
    obj = pod.obj
    return {"metadata.name": obj.metadata.name, "metadata.namespace": obj.metadata.namespace,
            "metadata.uid": obj.metadata.uid, "spec.nodeName": obj.spec.node_name,
            "spec.serviceAccountName": obj.spec.service_account_name,
            "status.podIP": pod.pod_ip or obj.status.pod_ip or "",
            "status.hostIP": pod.host_ip or obj.status.host_ip or ""}[path]


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
    make every mount private but the nodes' (so that no mount made here reaches the host, while one made or
    detached under a hostPath volume does), bind each source (a directory or a file) at its target with the
    mounts below it, then exec the rest. Every source is first bound into a private tmpfs: a target such as
    /tmp may hide a source below it."""
    lines = ["set -e", 'nodes="$1"', "shift",
             "while read -r _ _ _ _ point _; do",
             '  case "$point" in "$nodes"|"$nodes"/*) ;; *) mount --make-private "$point" 2>/dev/null || true ;; esac',
             "done < /proc/self/mountinfo",
             "mount -t tmpfs runner /mnt",
             'place() { if [ -d "$1" ]; then mkdir -p "$2"; else mkdir -p "$(dirname "$2")"; touch "$2"; fi; }']
    for i in range(count):
        lines += [f'place "${{{2 * i + 1}}}" /mnt/{i}', f'mount --rbind "${{{2 * i + 1}}}" /mnt/{i}']
    for i in range(count):
        lines += [f'place /mnt/{i} "${{{2 * i + 2}}}"', f'mount --rbind /mnt/{i} "${{{2 * i + 2}}}"']
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
