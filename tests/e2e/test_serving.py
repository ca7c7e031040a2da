"""The chart serving for real (testbed/serving.py): every pod of the release runs, the frontend with the real
Dynamo runtime exactly as rendered, the workers with it but for the engine and the FUSE client, against real
etcd and NATS, and `helm install --wait` and `helm test` get the real verdicts."""

import contextlib
import re
import time
import urllib.error

import pytest
from kubernetes import client

from testbed import cluster, servers
from testbed.helm import environment_values
from testbed.netns import network_host
from testbed.serving import ETCD_PORT, MODELS, RELEASE, chat, frontends, release, request

PROMPT = " ".join(f"word{i % 97}" for i in range(600))  # some twenty KV blocks


def helm_test(major, namespace, runner):
    """The test Pod's log once `helm test` passed, run when the frontend's Service name resolves: here it leads
    to the Service's ready endpoints (testbed/cluster_dns.py), rewritten up to a second after their EndpointSlice
    changed, where a cluster's DNS answers with the Service's IP at once."""
    service = f"{RELEASE}-dynamo-offloading-frontend"
    cluster.wait_until(lambda: runner.hosts_files.resolves(namespace, service), f"{service} resolving", within=30)
    done = cluster.helm(major, "test", RELEASE, "-n", namespace, "--timeout", "3m", check=False)
    pods = [name for name in runner.logs if "test-chat-completion" in name]
    log = runner.logs[pods[-1]]["chat-completion"] if pods else ""
    ready = {p.metadata.name: cluster.pod_ready(p) for p in cluster.release_pods(namespace, RELEASE, "frontend")}
    assert done.returncode == 0, f"{done.stdout}{done.stderr}{log}\nfrontends ready: {ready}\n" \
        f"{runner.hosts_files.path(namespace).read_text()}\n{runner.describe()}"
    return log


# The KV router's line for each routed request: 0.9.0's "Selected worker" event, 1.6.1's request span.
ROUTED = (re.compile(r"Selected worker: worker_id=(?P<worker>\d+) dp_rank=\d+, logit: \S+, "
                     r"cached blocks: (?P<cached>\d+)"),
          re.compile(r"route request completed .* overlap_blocks=(?P<cached>\d+) .*worker_id=(?P<worker>\d+)"))


def selections(runner, pod):
    """The KV router's choices in a frontend's log: (worker id, cached blocks) per routed request."""
    return [(int(m["worker"]), int(m["cached"])) for line in runner.log(pod.metadata.name, "frontend").splitlines()
            for pattern in ROUTED if (m := pattern.search(line))]


def repeat_until_routed_by_cache(runner, frontend, model, prompt, repeats=3, attempts=20):
    """Send `prompt` until the router finds its blocks cached, then `repeats` times more: the router's choices.

    A worker publishes the blocks it cached after it answers, and the router learns them asynchronously, so the
    first repeats may come before the event: the router then sees nothing cached (0 blocks) and may pick another
    worker, which then holds the blocks too."""
    before = len(selections(runner, frontend))

    def send():
        """One request; the choices so far once the router's line for it is in the log."""
        expected = len(selections(runner, frontend)) + 1

        def logged():
            seen = selections(runner, frontend)
            return seen[before:] if len(seen) >= expected else None
        chat(frontend.status.pod_ip, model, prompt)
        return cluster.wait_until(logged, "the router's line for the request", within=10, every=0.1)

    for _ in range(attempts):
        if send()[-1][1] > 0:
            break
        time.sleep(0.5)
    for _ in range(repeats):
        chosen = send()
    return chosen


def assert_routed_to_holders(chosen, repeats=3):
    """Once the router finds the prompt's blocks, every repeat goes to a worker that served the prompt before
    (so holds its blocks), with the blocks counted as cached."""
    first_hit = next((i for i, (_, cached) in enumerate(chosen) if cached > 0), None)
    assert first_hit is not None and first_hit > 0, chosen
    assert len(chosen) == first_hit + 1 + repeats, chosen
    for i in range(first_hit, len(chosen)):
        holders = {worker for worker, _ in chosen[:i]}
        worker, cached = chosen[i]
        assert worker in holders and cached > 0, chosen


def served_counts(runner, namespace):
    """How many requests each worker pod's engine served so far (the engine's line per request), by pod."""
    return {p.metadata.name: runner.log(p.metadata.name, "worker").count(" served by worker ")
            for p in cluster.release_pods(namespace, RELEASE, "worker")}


def assert_each_model_served_by_its_group_only(namespace, runner):
    """Each group of values/scale-out.yaml serves its own model."""
    frontend = frontends(namespace)[0]
    for group, settings in environment_values("scale-out")["worker"]["groups"].items():
        model = settings["model"]["repoId"]
        before = served_counts(runner, namespace)
        for i in range(8):
            chat(frontend.status.pod_ip, model, f"{PROMPT} {i}")
        after = served_counts(runner, namespace)
        served = {pod for pod, count in after.items() if count > before.get(pod, 0)}
        assert served and all(f"-worker-{group}-" in pod for pod in served), (model, served)


def assert_a_deleted_worker_s_requests_go_to_the_others(namespace):
    frontend = frontends(namespace)[0]
    group = f"{cluster.component_selector(RELEASE, 'worker')},dynamo-offloading/worker-group=qwen3-8b"
    victim = cluster.core().list_namespaced_pod(namespace, label_selector=group).items[0]
    cluster.core().delete_namespaced_pod(victim.metadata.name, namespace)
    cluster.wait_until(lambda: victim.metadata.uid not in {
        p.metadata.uid for p in cluster.core().list_namespaced_pod(namespace, label_selector=group).items},
        f"{victim.metadata.name} gone", within=60)
    for _ in range(8):
        assert chat(frontend.status.pod_ip, "Qwen/Qwen3-8B")["choices"]


@pytest.fixture(scope="class")
def seed(seed_peers, hub, mgmtd):
    """The seed's release (values/ipoib.yaml), installed with Helm 3's --wait."""
    with release("ipoib", 3, mgmtd, hub) as served:
        yield served


@pytest.fixture(scope="class")
def pool(seed_peers, hub, mgmtd):
    """Eight workers of two models on four nodes (values/scale-out.yaml), installed with Helm 4's --wait."""
    with release("scale-out", 4, mgmtd, hub) as served:
        yield served


@pytest.fixture(scope="class")
def seed_16(seed_peers, hub, mgmtd):
    """The seed's release on Dynamo 1.6 (etcd discovery, the NATS event plane), installed with Helm 4's --wait."""
    with release("ipoib", 4, mgmtd, hub, {"dynamo": {"release": "1.6"}}) as served:
        yield served


class TestSeed:

    def test_ready_only_once_it_serves_and_helm_test_gets_answers(self, seed):
        namespace, runner = seed
        # --wait returned, so the frontend is Ready: it lists the model, and answers.
        (frontend,) = frontends(namespace)
        models = request(f"http://{frontend.status.pod_ip}:8000/v1/models")["data"]
        assert [m["id"] for m in models] == ["Qwen/Qwen3-8B"]
        assert chat(frontend.status.pod_ip, "Qwen/Qwen3-8B")["choices"][0]["message"]["content"]
        log = helm_test(3, namespace, runner)
        assert "chat completion OK: Qwen/Qwen3-8B" in log and "streamed chat completion OK: Qwen/Qwen3-8B" in log


class TestSeedOn16:
    def test_the_frontend_serves_without_a_copy_of_the_model_files(self, seed_16):
        """From 1.4 the worker serves its model's files on its system port: the frontend has none of its own (no
        download, no volume), and still loads the model and answers."""
        namespace, runner = seed_16
        (frontend,) = frontends(namespace)
        assert not frontend.spec.init_containers
        assert not [v for v in frontend.spec.volumes if v.name.startswith("hf-cache")]
        assert frontend.spec.containers[0].image.endswith(":1.6.0")
        models = request(f"http://{frontend.status.pod_ip}:8000/v1/models")["data"]
        assert [m["id"] for m in models] == ["Qwen/Qwen3-8B"]
        log = helm_test(4, namespace, runner)
        assert "streamed chat completion OK: Qwen/Qwen3-8B" in log
        worker = runner.log(f"{RELEASE}-dynamo-offloading-worker-0", "worker")
        assert "dynamo.trtllm stand-in" in worker and "'--publish-events-and-metrics'" not in worker


class TestPool:

    def test_every_model_answers_helm_test(self, pool):
        namespace, runner = pool
        log = helm_test(4, namespace, runner)
        for model in MODELS:
            assert f"streamed chat completion OK: {model}" in log

    def test_a_repeated_prompt_goes_to_the_worker_holding_its_blocks(self, pool):
        """KV routing: the workers publish the blocks they cache over the chart's NATS, so the frontend's router
        sends the prompt again to a worker that served it, among the group's four."""
        namespace, runner = pool
        frontend = frontends(namespace)[0]
        assert_routed_to_holders(repeat_until_routed_by_cache(runner, frontend, "Qwen/Qwen3-8B", PROMPT))

    def test_each_model_s_requests_go_to_its_own_group(self, pool):
        assert_each_model_served_by_its_group_only(*pool)

    def test_a_deleted_worker_s_requests_go_to_the_others(self, pool):
        assert_a_deleted_worker_s_requests_go_to_the_others(pool[0])


def test_a_frontend_without_the_worker_s_model_files_is_not_ready_and_says_why(seed_peers, hub, mgmtd):
    """The worker's node holds an older snapshot of the revision than the hub: the frontend downloads the hub's,
    not the one the worker registers, so it cannot load the model (what pinning worker.model.snapshot avoids).
    Not Ready, with the reason in its events and log, instead of a Ready frontend answering 404."""
    with release("ipoib", 4, mgmtd, hub, wait=False, commit="1" * 40) as (namespace, runner):
        worker = f"{RELEASE}-dynamo-offloading-worker-0"
        cluster.wait_until(lambda: cluster.pod_ready(cluster.core().read_namespaced_pod(worker, namespace)),
                           "the worker Ready", within=120)
        (frontend,) = cluster.release_pods(namespace, RELEASE, "frontend")
        name = frontend.metadata.name

        def unhealthy():
            return [e.message for e in cluster.core().list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name},reason=Unhealthy").items]
        messages = cluster.wait_until(unhealthy, "the frontend's readiness failing", within=60)
        assert any(m.startswith("Readiness probe failed: not serving Qwen/Qwen3-8B yet") for m in messages), messages
        time.sleep(10)  # well past the worker's registration
        assert not cluster.pod_ready(cluster.core().read_namespaced_pod(name, namespace))
        snapshot = f"/data/huggingface/hub/models--Qwen--Qwen3-8B/snapshots/{'1' * 40}"
        assert re.search(r'Error adding model from discovery .*model_name.*"Qwen/Qwen3-8B".*Failed to fetch model '
                         f"'{snapshot}'", runner.log(name, "frontend")), runner.log(name, "frontend")
        with pytest.raises(urllib.error.HTTPError) as refused:
            chat(cluster.core().read_namespaced_pod(name, namespace).status.pod_ip, "Qwen/Qwen3-8B")
        assert refused.value.code == 404


def test_the_worker_finds_a_moved_etcd_at_its_next_start_and_the_frontend_serves_again(seed_peers, hub, mgmtd,
                                                                                    tmp_path):
    """etcd's pod replaced at a new address: the worker loses its lease and exits, and its next start (the
    kubelet's restart) takes the new address from the resolve sidecar and registers again; the frontend, which
    finds etcd by the Service's name, exits too and comes back to it. Last in this module: the seed's etcd stops
    for good."""
    host, etcd, nats = seed_peers
    worker = f"{RELEASE}-dynamo-offloading-worker-0"
    with release("ipoib", 4, mgmtd, hub) as (namespace, runner), network_host() as moved_host, \
            servers.etcd_server(tmp_path / "etcd", host=moved_host.address, prefix=moved_host.prefix,
                                client_port=ETCD_PORT) as moved:
        etcd.stop()
        cluster.publish("etcd-headless", moved_host.address, "client", ETCD_PORT)

        def restarted():
            statuses = cluster.core().read_namespaced_pod(worker, namespace).status.container_statuses
            return next(s.restart_count for s in statuses if s.name == "worker") >= 1

        def serves():
            with contextlib.suppress(urllib.error.URLError, OSError, IndexError):
                return chat(frontends(namespace)[0].status.pod_ip, "Qwen/Qwen3-8B")["choices"]
        try:
            cluster.wait_until(restarted, "the worker's next start", within=120)
            cluster.wait_until(serves, "the release serving again after etcd moved", within=180)
        except TimeoutError as err:
            raise AssertionError(f"{err}\n{runner.describe()}") from err
        record = cluster.core().read_namespaced_config_map(f"{RELEASE}-dynamo-offloading-endpoints", namespace).data
        assert record["ETCD_ENDPOINTS"] == moved.url
        assert f"etcd: {moved.url} (endpointslices)" in runner.log(worker, "resolve")
        assert "Unable to maintain lease" in runner.log(worker, "worker")


KUBERNETES_POOL = {"dynamo": {"release": "1.6", "discovery": "kubernetes", "eventPlane": "zmq"}}


@pytest.fixture(scope="module")
def dynamo_crd():
    cluster.install_dynamo_crd()


@pytest.fixture(scope="class")
def seed_kubernetes(dynamo_crd, hub, mgmtd):
    """The seed's hardware on 1.6 with Kubernetes discovery and the ZMQ event plane (values/ipoib-kubernetes.yaml):
    no etcd, no NATS."""
    with release("ipoib-kubernetes", 4, mgmtd, hub) as served:
        yield served


class TestKubernetesDiscovery:
    def test_the_worker_is_found_through_its_metadata_object_and_endpointslices(self, seed_kubernetes):
        namespace, runner = seed_kubernetes
        worker = cluster.core().read_namespaced_pod(f"{RELEASE}-dynamo-offloading-worker-0", namespace)
        metadata = client.CustomObjectsApi(cluster.api()).get_namespaced_custom_object(
            "nvidia.com", "v1alpha1", namespace, "dynamoworkermetadatas", worker.metadata.name)
        owners = [(o["kind"], o["uid"]) for o in metadata["metadata"]["ownerReferences"]]
        assert owners == [("Pod", worker.metadata.uid)]
        assert metadata["spec"]["data"]
        slices = client.DiscoveryV1Api(cluster.api()).list_namespaced_endpoint_slice(
            namespace, label_selector="nvidia.com/dynamo-discovery-enabled=true").items
        assert [(e.target_ref.uid, e.conditions.ready) for s in slices for e in s.endpoints] == \
            [(worker.metadata.uid, True)]
        log = helm_test(4, namespace, runner)
        assert "streamed chat completion OK: Qwen/Qwen3-8B" in log
        # Nothing of etcd or NATS: no address in any Dynamo process, no server.
        for pod in cluster.release_pods(namespace, RELEASE):
            for c in pod.spec.containers:
                assert not {"ETCD_ENDPOINTS", "NATS_SERVER"} & {e.name for e in c.env or []}

    def test_a_worker_removed_leaves_the_frontends_models_and_comes_back(self, seed_kubernetes):
        namespace, runner = seed_kubernetes
        frontend = frontends(namespace)[0]
        sts = f"{RELEASE}-dynamo-offloading-worker"

        def models():
            with contextlib.suppress(urllib.error.URLError, OSError):
                return [m["id"] for m in request(f"http://{frontend.status.pod_ip}:8000/v1/models")["data"]]
            return None

        cluster.kubectl("scale", "statefulset", sts, "-n", namespace, "--replicas=0")
        cluster.wait_until(lambda: models() == [], "the model gone from /v1/models", within=60)
        cluster.kubectl("scale", "statefulset", sts, "-n", namespace, "--replicas=1")
        cluster.wait_until(lambda: models() == ["Qwen/Qwen3-8B"], "the model back on /v1/models", within=120)


@pytest.fixture(scope="class")
def pool_kubernetes(dynamo_crd, hub, mgmtd):
    """The pool on 1.6 with Kubernetes discovery and the ZMQ event plane."""
    with release("scale-out", 4, mgmtd, hub, KUBERNETES_POOL) as served:
        yield served


class TestPoolOnKubernetesDiscovery:
    def test_every_model_answers_helm_test(self, pool_kubernetes):
        namespace, runner = pool_kubernetes
        log = helm_test(4, namespace, runner)
        for model in MODELS:
            assert f"streamed chat completion OK: {model}" in log

    def test_a_repeated_prompt_goes_to_the_worker_holding_its_blocks(self, pool_kubernetes):
        """KV events over ZMQ, each worker's publisher found through discovery."""
        namespace, runner = pool_kubernetes
        frontend = frontends(namespace)[0]
        assert_routed_to_holders(repeat_until_routed_by_cache(runner, frontend, "Qwen/Qwen3-8B", PROMPT))

    def test_each_model_s_requests_go_to_its_own_group(self, pool_kubernetes):
        assert_each_model_served_by_its_group_only(*pool_kubernetes)

    def test_a_deleted_worker_s_requests_go_to_the_others(self, pool_kubernetes):
        assert_a_deleted_worker_s_requests_go_to_the_others(pool_kubernetes[0])

    def test_dynamo_may_do_what_it_calls_on_the_api_server_and_nothing_more(self, pool_kubernetes):
        """RBAC measured: what the frontend's and the workers' Dynamo processes asked the API server (its audit
        log) while serving and through a worker's restart, against what their ServiceAccounts may do (the
        server's SelfSubjectRulesReview). Server-side apply of an object not there yet is authorized as create
        and audited as patch, so a patch accounts for create."""
        namespace, _ = pool_kubernetes
        victim = cluster.release_pods(namespace, RELEASE, "worker")[0]
        cluster.core().delete_namespaced_pod(victim.metadata.name, namespace)

        def restarted():
            pod = cluster.core().read_namespaced_pod(victim.metadata.name, namespace)
            return pod.metadata.uid != victim.metadata.uid and cluster.pod_ready(pod)
        cluster.wait_until(restarted, f"{victim.metadata.name} back and Ready", within=120)
        for component in ("frontend", "worker"):
            account = cluster.release_pods(namespace, RELEASE, component)[0].spec.service_account_name
            requests = cluster.audited_requests(namespace, account)
            assert requests and not [r for r in requests if r[-1] == 403], (component, requests)
            called = {request[:-1] for request in requests}
            applied = {(where, group, resource, "create") for where, group, resource, verb in called if verb == "patch"}
            account_api = cluster.as_service_account(namespace, account)
            granted = {(where, *rule[:-1]) for where in (namespace, cluster.SEED_NAMESPACE)
                       for rule in cluster.granted_rules(account_api, where)}
            assert called <= granted, (component, sorted(called - granted))
            assert granted <= called | applied, (component, sorted(granted - called - applied))


def test_without_dynamos_crd_the_install_fails_before_anything_is_created(dynamo_crd, hub, mgmtd):
    cluster.remove_dynamo_crd()
    try:
        with pytest.raises(AssertionError) as failed:
            with release("ipoib-kubernetes", 4, mgmtd, hub, wait=True):
                pass
        assert "the DynamoWorkerMetadata CustomResourceDefinition is not installed; it comes with Dynamo's " \
               "platform chart" in str(failed.value)
    finally:
        cluster.install_dynamo_crd()
