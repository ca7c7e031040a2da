"""A release of the chart served for real, for the serving tests and make bench: a serving runner
(testbed/runner.py) runs every pod, the frontend with the real Dynamo runtime exactly as rendered, the workers
with it too but for the TensorRT-LLM engine (testbed/trtllm_standin.py) and the 3FS FUSE client
(testbed/hf3fs_standin.py), each pod in a test host; etcd and NATS are real servers behind the seed's
Services, mgmtd the wire-format peer, and the frontend's model files come from the tests' hub (testbed/hub.py)."""

import contextlib
import functools
import json
import urllib.request

from generator.environments import overlay
from testbed import cluster, model_files, servers
from testbed.helm import chart_defaults, environment_values
from testbed.hub import hub_server
from testbed.netns import bridge_address, network_host
from testbed.runner import LABEL, PodRunner
from testbed.threefs_peer import ThreeFSPeer

RELEASE = "dynamo"
ETCD_PORT, NATS_PORT = 2379, 4222  # the ports the seed's Services name
MODELS = ("Qwen/Qwen3-8B", "Qwen/Qwen3-32B")  # what the environments serve


@contextlib.contextmanager
def seed_peers(directory):
    """The seed's shared etcd and NATS (JetStream): real servers on a test host, at their usual ports, behind
    baseten/etcd-headless and baseten/nats-headless. Yields (host, etcd, nats)."""
    cluster.seed_services()
    with network_host() as host, \
            servers.etcd_server(directory / "etcd", host=host.address, prefix=host.prefix,
                                client_port=ETCD_PORT) as etcd, \
            servers.nats_server(directory / "nats", host=host.address, prefix=host.prefix, port=NATS_PORT) as nats:
        cluster.publish("etcd-headless", host.address, "client", ETCD_PORT)
        cluster.publish("nats-headless", host.address, "nats", NATS_PORT)
        yield host, etcd, nats


@contextlib.contextmanager
def hub(directory):
    """The models' files on a hub the frontend's init containers reach (HF_ENDPOINT), at this host's address
    on the test bridge."""
    with hub_server(model_files.write_model(directory), repo_ids=MODELS, host=bridge_address()) as served:
        yield served


def mgmtd():
    """The seed's 3FS mgmtd, as its wire-format peer on the test bridge."""
    return ThreeFSPeer("primary", cluster_id=environment_values("ipoib")["threefs"]["clusterId"],
                       host=bridge_address())


def values(env, mgmtd, hub, *more):
    """An environment's values as a served release takes them: every pod labelled for the runner, the
    test's mgmtd and hub."""
    runner = {LABEL: "true"}
    return [environment_values(env), cluster.CLUSTER_VALUES, {
        "commonLabels": runner,  # the helm test Pod
        "frontend": {"podLabels": runner, "extraEnv": [{"name": "HF_ENDPOINT", "value": hub.url}]},
        "worker": {"podLabels": runner},
        "hooks": {"podLabels": runner},
        "threefs": {"mgmtdAddresses": [mgmtd.address("TCP")]},
    }, *more]


def merged(layers):
    return functools.reduce(overlay, [chart_defaults(), *layers])


def groups(values):
    """(nodes, repo id) of each worker group of merged values."""
    worker = values["worker"]
    for group in (worker.get("groups") or {"": {}}).values():
        own = overlay(worker, group)
        yield own.get("nodes") or [own["nodeSelector"]["kubernetes.io/hostname"]], own["model"]["repoId"]


def put_models(runner, values, commit):
    """Every group's model in its nodes' Hugging Face caches, at `commit`, as a download leaves it."""
    cache = values["worker"]["model"]["cacheHostPath"].lstrip("/")
    for nodes, repo in groups(values):
        for node in nodes:
            model_files.put_in_hf_cache(runner.node_dir(node) / cache, repo, commit=commit)


@contextlib.contextmanager
def release(env, major, mgmtd, hub, *more, wait=True, commit=None):
    """A release of `env` served by a runner in a namespace of its own, the workers' nodes holding their models
    at `commit` (the hub's by default), uninstalled at the end: yields (namespace, runner)."""
    layers = values(env, mgmtd, hub, *more)
    namespace = cluster.create_namespace(cluster.unique(f"serve-{env}"))
    cluster.prepare(namespace, environment_values(env))
    try:
        with PodRunner(namespace, serve=merged(layers)) as runner:
            put_models(runner, merged(layers), commit or hub.commit)
            try:
                cluster.install(major, RELEASE, namespace, *layers, timeout="4m", wait=wait)
            except Exception as err:
                raise AssertionError(f"{err}\n{runner.describe()}") from err
            yield namespace, runner
            cluster.uninstall(major, RELEASE, namespace)
    finally:
        cluster.delete_namespace(namespace)


def frontends(namespace):
    """The release's Ready frontend pods."""
    return [p for p in cluster.release_pods(namespace, RELEASE, "frontend") if cluster.pod_ready(p)]


def request(url, body=None, timeout=30):
    """The JSON answer of a GET, or of a POST of `body`."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = None if body is None else json.dumps(body).encode()
    with opener.open(urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}),
                     timeout=timeout) as answer:
        return json.load(answer)


def chat(address, model, content="Say hello.", max_tokens=4, port=8000, timeout=30):
    """A chat completion from the frontend at `address`."""
    return request(f"http://{address}:{port}/v1/chat/completions",
                   {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens},
                   timeout=timeout)
