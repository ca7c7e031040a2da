"""values/scale-out.yaml on the real scheduler with simulated 8-GPU nodes: every worker placed where its group's
plan says, a worker that cannot fit left Pending with the scheduler's reason, starts and upgrades bounded per
group, and a start policy that cannot change refused before anything changes."""

import collections
import threading

import pyhelm3
import pytest
import urllib3
from kubernetes import watch

from testbed import cluster
from tests.helm import environment_values

RELEASE = "dynamo"
GROUP_LABEL = "dynamo-offloading/worker-group"
WORKERS = cluster.component_selector(RELEASE, "worker")


def worker_pods(namespace):
    return cluster.release_pods(namespace, RELEASE, "worker")


class WorkerWatch:
    """Every change of the release's worker pods, as the API server reports it, and per group the most pods
    that were at once starting (there, not Ready) and unavailable (of `replicas`, not Ready or going)."""

    def __init__(self, namespace, replicas):
        self.namespace, self.replicas = namespace, replicas
        self.pods = {}
        self.starting = collections.Counter()
        self.unavailable = collections.Counter()
        self.timeline = []  # what each event said, for a failing assertion
        self._watch = watch.Watch()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self):
        try:
            self._run()
        except urllib3.exceptions.ProtocolError:
            if not self._stopping.is_set():  # the stream cut on stop is expected; any other cut is not
                raise

    def _run(self):
        listing = cluster.core().list_namespaced_pod(self.namespace, label_selector=WORKERS)
        for pod in listing.items:
            self.pods[pod.metadata.name] = pod
        for event in self._watch.stream(cluster.core().list_namespaced_pod, self.namespace, label_selector=WORKERS,
                                        resource_version=listing.metadata.resource_version, timeout_seconds=600):
            pod = event["object"]
            self.timeline.append((event["type"], pod.metadata.name, pod.status.phase, cluster.pod_ready(pod),
                                  pod.metadata.deletion_timestamp is not None,
                                  pod.metadata.labels.get("controller-revision-hash")))
            if event["type"] == "DELETED":
                self.pods.pop(pod.metadata.name, None)
            else:
                self.pods[pod.metadata.name] = pod
            self._count()

    def _count(self):
        serving, starting = collections.Counter(), collections.Counter()
        for pod in self.pods.values():
            group = pod.metadata.labels[GROUP_LABEL]
            if pod.metadata.deletion_timestamp is None:
                (serving if cluster.pod_ready(pod) else starting)[group] += 1
        for group in self.replicas:
            self.starting[group] = max(self.starting[group], starting[group])
            self.unavailable[group] = max(self.unavailable[group], self.replicas[group] - serving[group])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stopping.set()
        self._watch.stop()
        self._thread.join(timeout=30)


def group_settings(values):
    return values["worker"]["groups"]


def test_scale_out_places_rolls_and_refuses(helm_major, namespace, seed_services):
    values = environment_values("scale-out")
    groups = group_settings(values)
    replicas = {name: group["replicas"] for name, group in groups.items()}
    cluster.prepare(namespace, values)

    with WorkerWatch(namespace, replicas) as install:
        cluster.install(helm_major, RELEASE, namespace, values, cluster.CLUSTER_VALUES)
    pods = worker_pods(namespace)
    assert len(pods) == sum(replicas.values()) >= 8
    assert all(p.status.phase == "Running" and cluster.pod_ready(p) for p in pods), [(p.metadata.name, p.status.phase)
                                                                          for p in pods]
    on_node = collections.defaultdict(list)
    for pod in pods:
        group = pod.metadata.labels[GROUP_LABEL]
        assert pod.spec.node_name in groups[group]["nodes"], (pod.metadata.name, pod.spec.node_name)
        on_node[pod.spec.node_name].append(group)
    assert len(on_node) >= 4
    assert all(sorted(g) == sorted(groups) for g in on_node.values()), "one worker of each group on each node"
    for node in on_node:
        ports = [port.container_port for p in pods if p.spec.node_name == node
                 for c in p.spec.containers for port in c.ports or []]
        assert len(ports) == len(set(ports)), f"{node}: a host port held twice"
    assert install.starting, "the watch saw the workers start"

    # An upgrade replaces one worker of each group at a time.
    with WorkerWatch(namespace, replicas) as upgrade:
        cluster.install(helm_major, RELEASE, namespace, values, cluster.CLUSTER_VALUES,
                        {"worker": {"engine": {"max_batch_size": 32}}})
    assert dict(upgrade.unavailable) == {name: 1 for name in groups}, "\n".join(map(str, upgrade.timeline))
    assert {p.metadata.labels["controller-revision-hash"] for p in worker_pods(namespace)} != \
        {p.metadata.labels["controller-revision-hash"] for p in pods}

    # The start policy of a StatefulSet cannot change: refused, and the workers stay as they were.
    before = {p.metadata.name: p.metadata.uid for p in worker_pods(namespace)}
    with pytest.raises(pyhelm3.errors.Error) as refused:
        cluster.install(helm_major, RELEASE, namespace, values, cluster.CLUSTER_VALUES,
                        {"worker": {"podManagementPolicy": "OrderedReady"}})
    for name in groups:
        assert f"worker.groups.{name}: worker.podManagementPolicy: the StatefulSet {RELEASE}-dynamo-offloading-" \
               f"worker-{name} starts its workers Parallel" in str(refused.value)
    assert {p.metadata.name: p.metadata.uid for p in worker_pods(namespace)} == before

    # A ninth worker finds no node: its group's four are taken by its own pods.
    ninth = {"worker": {"groups": {"qwen3-8b": {"replicas": replicas["qwen3-8b"] + 1}}}}
    cluster.install(helm_major, RELEASE, namespace, values, cluster.CLUSTER_VALUES, ninth, wait=False)
    name = f"{RELEASE}-dynamo-offloading-worker-qwen3-8b-{replicas['qwen3-8b']}"

    def unschedulable():
        """The pod and the scheduler's verdict on it, once there is one."""
        pods = cluster.core().list_namespaced_pod(namespace, field_selector=f"metadata.name={name}").items
        for pod in pods:
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False" \
                        and condition.reason == "Unschedulable":
                    return condition, pod
        return None

    condition, pod = cluster.wait_until(unschedulable, "the scheduler's verdict")
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    # Its group's nodes are held by its own pods (their host ports, and the anti-affinity: the scheduler names
    # the first filter that fails), and no other node is its group's.
    held = ("4 node(s) didn't have free ports for the requested pod ports",
            "4 node(s) didn't match pod anti-affinity rules")
    assert any(reason in condition.message for reason in held), condition.message
    assert "2 node(s) didn't match Pod's node affinity/selector" in condition.message, condition.message


def test_ordered_ready_starts_one_worker_of_a_group_at_a_time(namespace, seed_services):
    values = environment_values("scale-out")
    replicas = {name: group["replicas"] for name, group in group_settings(values).items()}
    cluster.prepare(namespace, values)
    with WorkerWatch(namespace, replicas) as install:
        cluster.install(4, RELEASE, namespace, values, cluster.CLUSTER_VALUES,
                        {"worker": {"podManagementPolicy": "OrderedReady"}})
    assert dict(install.starting) == {name: 1 for name in replicas}
    pods = worker_pods(namespace)
    assert all(cluster.pod_ready(p) for p in pods) and len(pods) == sum(replicas.values())
