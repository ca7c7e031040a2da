"""The pre-install/pre-upgrade hook and the worker's resolve sidecar executed for real inside the cluster
(testbed/runner.py runs their pods): their own ServiceAccount tokens and RBAC against the API server, the
seed's Services resolved through their EndpointSlices to real etcd and NATS servers in a network namespace
of the test, a 3FS mgmtd wire-format peer on loopback, and Helm waiting for the true verdict."""

import shutil

import pyhelm3
import pytest

from testbed import cluster, servers
from testbed.netns import network_host
from testbed.runner import LABEL, PodRunner
from testbed.threefs_peer import ThreeFSPeer
from tests.helm import environment_values

RELEASE = "dynamo"
RECORD = f"{RELEASE}-dynamo-offloading-endpoints"
WORKER_POD = f"{RELEASE}-dynamo-offloading-worker-0"
HANDOFF = ". /run/dynamo-offloading/worker.env"  # the start script's line that takes the sidecar's answer


@pytest.fixture(scope="module")
def peers(seed_services, tmp_path_factory):
    """etcd and NATS on a test host the EndpointSlices can name (the API server refuses loopback there)."""
    directory = tmp_path_factory.mktemp("peers")
    with network_host() as host, \
            servers.etcd_server(directory / "etcd", host=host.address, prefix=host.prefix) as etcd, \
            servers.nats_server(directory / "nats", host=host.address, prefix=host.prefix) as nats:
        yield host, etcd, nats


def seed_values(mgmtd, **checks):
    """The seed's values with the test's mgmtd (a ThreeFSPeer, or an address)."""
    address = mgmtd if isinstance(mgmtd, str) else mgmtd.address("TCP")
    return [environment_values("ipoib"), cluster.CLUSTER_VALUES, {
        "hooks": {"podLabels": {LABEL: "true"}, "timeoutSeconds": 2,
                  "preInstall": {"activeDeadlineSeconds": 60, "backoffLimit": 0, "checks": checks}},
        "threefs": {"mgmtdAddresses": [address]}}]


def put_model_in_cache(runner, values):
    """The seed's model in the worker node's Hugging Face cache, as a download leaves it; its snapshot's path
    on the node."""
    worker = values["worker"]
    node_dir = runner.node_dir(worker["nodeSelector"]["kubernetes.io/hostname"])
    repo = node_dir / worker["model"]["cacheHostPath"].lstrip("/") / "hub" / \
        ("models--" + worker["model"]["repoId"].replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / worker["model"]["revision"]).write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    return "/" + str((repo / "snapshots" / commit).relative_to(node_dir))


def start_worker(runner):
    """Play the worker container's start up to dynamo.trtllm: its own script's request to the resolve
    sidecar, then what the start takes from the answer."""
    pod = cluster.core().read_namespaced_pod(WORKER_POD, runner.namespace)
    script = next(c for c in pod.spec.containers if c.name == "worker").command[2]
    assert HANDOFF in script
    request = script.split(HANDOFF)[0] + HANDOFF + '\necho "$ETCD_ENDPOINTS $NATS_SERVER $MODEL_PATH"\n'
    done = runner.exec(WORKER_POD, "worker", ["sh", "-ec", request])
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def hook_log(runner):
    """The last pre-install pod's log."""
    pods = sorted(name for name in runner.logs if "pre-install" in name)
    return runner.logs[pods[-1]]["pre-install"] if pods else ""


@pytest.fixture
def release_namespace(namespace):
    cluster.prepare(namespace, environment_values("ipoib"))
    return namespace


def test_seed_topology_resolved_verified_and_recorded(peers, release_namespace, tmp_path):
    host, etcd, nats = peers
    namespace = release_namespace
    cluster.publish("etcd-headless", host.address, "client", etcd.port)
    cluster.publish("nats-headless", host.address, "nats", nats.port)
    etcd_url, nats_url = f"http://{host.address}:{etcd.port}", f"nats://{host.address}:{nats.port}"
    with ThreeFSPeer("primary", cluster_id="ipoib") as mgmtd, PodRunner(namespace) as runner:
        values = [*seed_values(mgmtd), {"worker": {"podLabels": {LABEL: "true"}}}]
        snapshot = put_model_in_cache(runner, environment_values("ipoib"))
        first = cluster.install(4, RELEASE, namespace, *values, timeout="3m")
        assert first.revision == 1
        log = hook_log(runner).splitlines()
        assert f"etcd: ok ({etcd_url})" in log
        assert f"nats: ok ({nats_url})" in log
        assert f"mgmtd: ok ({mgmtd.address('TCP')})" in log
        # Helm creates the record ConfigMap only after pre-install hooks: the first install records nothing,
        # the worker's resolve sidecar does, through the API with its own token.
        assert any("does not exist yet (a first install)" in line for line in log)
        record = cluster.core().read_namespaced_config_map(RECORD, namespace).data
        assert (record["ETCD_ENDPOINTS"], record["NATS_SERVER"]) == (etcd_url, nats_url)
        assert start_worker(runner) == [etcd_url, nats_url, snapshot]

        # etcd's pods moved: the worker's next start (a container restart) finds and records the new address.
        with servers.etcd_server(tmp_path / "moved", host=host.address, prefix=host.prefix) as moved:
            moved_url = f"http://{host.address}:{moved.port}"
            cluster.publish("etcd-headless", host.address, "client", moved.port)
            assert start_worker(runner)[0] == moved_url
            record = cluster.core().read_namespaced_config_map(RECORD, namespace).data
            assert record["ETCD_ENDPOINTS"] == moved_url
        # And back: the pre-upgrade hook resolves it and the rolled worker's start takes it.
        cluster.publish("etcd-headless", host.address, "client", etcd.port)
        before = cluster.core().read_namespaced_pod(WORKER_POD, namespace).metadata.uid
        cluster.install(4, RELEASE, namespace, *values, {"kvbm": {"cpuCacheGB": 30, "diskCacheGB": 60}},
                        timeout="3m")
        assert f"etcd: ok ({etcd_url})" in hook_log(runner).splitlines()
        assert cluster.core().read_namespaced_config_map(RECORD, namespace).data["ETCD_ENDPOINTS"] == etcd_url
        cluster.wait_until(lambda: cluster.core().read_namespaced_pod(WORKER_POD, namespace).metadata.uid != before,
                           "the worker pod replaced")
        assert start_worker(runner)[:2] == [etcd_url, nats_url]
        cluster.uninstall(4, RELEASE, namespace)


@pytest.mark.parametrize("fault", ["etcd-down", "nats-down", "no-endpoints", "mgmtd-refused", "mgmtd-silent",
                                   "mgmtd-other-cluster"])
def test_a_failed_required_check_fails_the_install_then_a_fixed_one_succeeds(fault, peers, release_namespace,
                                                                             tmp_path):
    host, etcd, nats = peers
    namespace = release_namespace
    dead = servers.free_port()
    cluster.publish("etcd-headless", host.address, "client", dead if fault == "etcd-down" else etcd.port)
    cluster.publish("nats-headless", host.address, "nats", dead if fault == "nats-down" else nats.port)
    if fault == "no-endpoints":
        cluster.delete_endpoint_slices(cluster.SEED_NAMESPACE, "etcd-headless")
    expected = {
        "etcd-down": f"etcd http://{host.address}:{dead}: connection refused",
        "nats-down": f"nats nats://{host.address}:{dead}: connection refused",
        "no-endpoints": "baseten/etcd-headless: Service baseten/etcd-headless has no serving endpoints",
        "mgmtd-refused": f"mgmtd TCP://127.0.0.1:{dead}: connection to 127.0.0.1:{dead} refused (nothing listens "
                         "there)",
        "mgmtd-silent": "connected, but no reply within 2s",
        "mgmtd-other-cluster": "serves another 3FS cluster: it rejected cluster id 'ipoib'",
    }[fault]
    mode = "silent" if fault == "mgmtd-silent" else "primary"
    cluster_id = "other" if fault == "mgmtd-other-cluster" else "ipoib"
    with ThreeFSPeer(mode, cluster_id=cluster_id) as mgmtd, PodRunner(namespace) as runner:
        given = f"TCP://127.0.0.1:{dead}" if fault == "mgmtd-refused" else mgmtd
        with pytest.raises(pyhelm3.errors.Error) as caught:
            cluster.install(4, RELEASE, namespace, *seed_values(given), timeout="2m")
        assert "pre-install" in str(caught.value) and "failed" in str(caught.value)
        assert any(expected in line for line in hook_log(runner).splitlines()), hook_log(runner)
        # What Helm leaves: the failed release's record and the failed hook Job, nothing of the release itself.
        kinds = {o.split("/")[0] for o in cluster.objects_of(RELEASE, namespace)}
        assert kinds <= {"Secret", "Job", "Pod"}, kinds
        assert not [o for o in cluster.objects_of(RELEASE, namespace)
                    if o.startswith(("StatefulSet/", "Deployment/", "ConfigMap/"))]

    # Fixed: the same install goes through.
    cluster.publish("etcd-headless", host.address, "client", etcd.port)
    cluster.publish("nats-headless", host.address, "nats", nats.port)
    with ThreeFSPeer("primary", cluster_id="ipoib") as mgmtd, PodRunner(namespace):
        assert cluster.install(4, RELEASE, namespace, *seed_values(mgmtd), timeout="3m").revision == 2
        cluster.uninstall(4, RELEASE, namespace)  # its post-delete hook runs here too


@pytest.mark.parametrize("mode", ["warn", "off"])
def test_warn_and_off_checks_let_the_install_go_on(mode, peers, release_namespace, tmp_path):
    host, etcd, nats = peers
    namespace = release_namespace
    cluster.publish("etcd-headless", host.address, "client", servers.free_port())  # down
    cluster.publish("nats-headless", host.address, "nats", nats.port)
    with ThreeFSPeer("primary", cluster_id="ipoib") as mgmtd, PodRunner(namespace) as runner:
        assert cluster.install(4, RELEASE, namespace, *seed_values(mgmtd, etcd=mode), timeout="3m").revision == 1
        log = hook_log(runner)
        assert ("warning: etcd" in log) == (mode == "warn")
        cluster.uninstall(4, RELEASE, namespace)
    cluster.publish("etcd-headless", host.address, "client", etcd.port)


def test_the_runner_refuses_a_pod_that_names_an_address_outside_the_test(release_namespace):
    """values/ipoib.yaml names the seed's mgmtd, 10.2.10.55: its hook pod is never run here."""
    namespace = release_namespace
    values = [environment_values("ipoib"), cluster.CLUSTER_VALUES, {"hooks": {"podLabels": {LABEL: "true"}}}]
    with PodRunner(namespace) as runner:
        with pytest.raises(pyhelm3.errors.Error):
            cluster.install(4, RELEASE, namespace, *values, timeout="1m")
        logs = [logs["runner"] for name, logs in runner.logs.items() if "pre-install" in name]
        assert logs and logs[0] == "refused: the pod names addresses outside the test: ['10.2.10.55']"
        cluster.uninstall(4, RELEASE, namespace)


def test_a_missing_permission_is_a_real_403_named_in_the_hook_log(peers, release_namespace, tmp_path):
    """A copy of the chart whose discovery Role lacks `list` on EndpointSlices: the API server refuses the
    hook's call, and the hook says which verb its ServiceAccount needs where."""
    host, etcd, nats = peers
    namespace = release_namespace
    cluster.publish("etcd-headless", host.address, "client", etcd.port)
    cluster.publish("nats-headless", host.address, "nats", nats.port)
    chart = tmp_path / "chart"
    shutil.copytree(cluster.CHART, chart)
    helpers = chart / "templates" / "_hooks.tpl"
    text = helpers.read_text()
    granted = "    resources: [endpointslices]\n    verbs: [list]\n"
    assert granted in text
    helpers.write_text(text.replace(granted, "    resources: [endpointslices]\n    verbs: [get]\n"))
    with ThreeFSPeer("primary", cluster_id="ipoib") as mgmtd, PodRunner(namespace) as runner:
        with pytest.raises(pyhelm3.errors.Error):
            cluster.install(4, RELEASE, namespace, *seed_values(mgmtd), timeout="2m", chart=chart)
        denied = (f"forbidden: cannot list endpointslices in namespace baseten (ServiceAccount {namespace}/"
                  f"{RELEASE}-dynamo-offloading-pre-install needs a Role there granting list on endpointslices)")
        # The first failure once, on stderr (what Helm shows); the other one on stdout.
        assert set(hook_log(runner).splitlines()) >= {
            f"etcd baseten/etcd-headless: {denied} (and 1 more failed: nats)",
            f"error: nats baseten/nats-headless: {denied}"}
        cluster.uninstall(4, RELEASE, namespace)
