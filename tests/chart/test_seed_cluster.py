"""values/ipoib.yaml carries every setting of the seed's deployment."""

import tomllib

import pytest
import yaml

from tests.helm import container, env_of, environment_values, one, peers_of, pod_spec, render


@pytest.fixture(scope="module")
def objects():
    return render(environment_values("ipoib"))


@pytest.fixture(scope="module")
def worker(objects):
    return one(objects, "StatefulSet", "worker")


def test_engine_config_has_the_seed_settings_and_kvbm_connector(objects):
    engine = yaml.safe_load(one(objects, "ConfigMap", "engine-config")["data"]["engine.yaml"])
    assert engine["tensor_parallel_size"] == 1
    assert engine["backend"] == "pytorch"
    assert engine["max_num_tokens"] == 8192
    assert engine["max_batch_size"] == 16
    assert engine["enable_chunked_prefill"] is True
    assert engine["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8, "enable_partial_reuse": False}
    assert engine["kv_connector_config"] == {
        "connector_module": "kvbm.trtllm_integration.connector",
        "connector_scheduler_class": "DynamoKVBMConnectorLeader",
        "connector_worker_class": "DynamoKVBMConnectorWorker",
    }


def test_fuse_launcher_uses_upstream_keys(objects):
    launcher = tomllib.loads(one(objects, "ConfigMap", "fuse-launcher")["data"]["launcher.toml"])
    assert launcher == {
        "allow_other": True,
        "cluster_id": "ipoib",
        "mountpoint": "/mnt/3fs-root/3fs",
        "token_file": "/etc/3fs-token/token",
        # force_use_tcp sits under [client]: 3FS rejects it at the top level, where the seed put it.
        "client": {"force_use_tcp": True},
        "ib_devices": {"device_filter": ["mlx5_0"], "default_pkey_index": 1},
        "mgmtd_client": {"mgmtd_server_addresses": ["RDMA://10.2.10.55:8010"]},
    }


def test_fdb_cluster_file_keeps_the_seed_address(objects):
    assert one(objects, "ConfigMap", "fdb")["data"]["fdb.cluster"].endswith("@10.2.10.55:4510")


def test_worker_kvbm_env_is_the_seeds(worker):
    env = env_of(container(worker, "worker"))
    assert env["DYN_KVBM_CPU_CACHE_GB"] == "20"
    assert env["DYN_KVBM_DISK_CACHE_GB"] == "50"
    # Each worker has its own directory on the shared 3FS; the kubelet expands the variables defined before it.
    assert env["DYN_KVBM_DISK_CACHE_DIR"] == "/mnt/3fs-root/3fs/kvbm_cache/$(POD_NAMESPACE)/$(POD_NAME)"
    names = [e["name"] for e in container(worker, "worker")["env"]]
    assert names.index("POD_NAME") < names.index("DYN_KVBM_DISK_CACHE_DIR")
    assert names.index("POD_NAMESPACE") < names.index("DYN_KVBM_DISK_CACHE_DIR")
    assert env["DYN_KVBM_DISK_DISABLE_O_DIRECT"] == "true"
    assert env["DYN_KVBM_DISK_ZEROFILL_FALLBACK"] == "true"
    assert env["DYN_KVBM_METRICS"] == "true"
    assert env["DYN_KVBM_METRICS_PORT"] == "6880"


def test_worker_runs_on_the_seed_node_with_host_network(worker):
    spec = pod_spec(worker)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "Default"
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "p02-r02-cp17"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert container(worker, "worker")["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_worker_resolves_the_seed_services_to_pod_ips(worker):
    """The seed pasted etcd/NATS pod IPs by hand; the resolve sidecar resolves baseten's Services at every start."""
    args = container(worker, "resolve")["args"]
    assert args[0] == "worker-init"
    assert "--resolve" in args
    assert peers_of(args) == {"etcd": (("service", "baseten", "etcd-headless", "client", 2379, False), "required"),
                              "nats": (("service", "baseten", "nats-headless", "nats", 4222, False), "required")}
    # A native sidecar that answers each start of the worker container, not an init container that runs
    # only when the pod is recreated.
    resolve = container(worker, "resolve")
    assert resolve["restartPolicy"] == "Always"
    assert "--serve=/run/dynamo-offloading/resolve-request" in args
    script = container(worker, "worker")["command"][2]
    request, source = "> /run/dynamo-offloading/resolve-request", ". /run/dynamo-offloading/worker.env"
    assert script.index(request) < script.index(source)


def test_frontend_reaches_etcd_and_nats_by_dns(objects):
    frontend = one(objects, "Deployment", "frontend")
    env = env_of(container(frontend, "frontend"))
    assert env["ETCD_ENDPOINTS"] == "http://etcd-headless.baseten.svc:2379"
    assert env["NATS_SERVER"] == "nats://nats-headless.baseten.svc:4222"
    assert pod_spec(frontend)["nodeSelector"] == {"kubernetes.io/hostname": "p02-r02-cp16"}
    args = container(frontend, "frontend")["args"]
    assert "--http-port=8000" in args
    assert "--router-mode=round-robin" in args


def test_frontend_service_is_cluster_ip_on_8000(objects):
    service = one(objects, "Service", "frontend")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8000


def test_worker_runs_offline_from_the_local_snapshot(worker):
    c = container(worker, "worker")
    env = env_of(c)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["HF_HOME"] == "/data/huggingface"
    # No snapshot hash in the values: the init container resolves refs/main in the node's cache.
    resolve = container(worker, "resolve")["args"]
    assert {"--hf-home=/data/huggingface", "--model-repo=Qwen/Qwen3-8B", "--model-revision=main"} <= set(resolve)
    assert not [a for a in resolve if a.startswith("--model-snapshot")]
    assert 'exec python3 -m dynamo.trtllm --model-path="$MODEL_PATH" "$@"' in c["command"][2]
    assert "--served-model-name=Qwen/Qwen3-8B" in c["args"]
    assert "--extra-engine-args=/etc/dynamo/engine/engine.yaml" in c["args"]
    hf = next(v for v in pod_spec(worker)["volumes"] if v["name"] == "hf-cache")
    assert hf["hostPath"]["path"] == "/data/huggingface"


def test_worker_status_server_and_advertised_address(worker):
    c = container(worker, "worker")
    env = env_of(c)
    assert env["DYN_SYSTEM_PORT"] == "8081"
    assert env["DYN_TCP_RPC_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "system"}
    assert c["startupProbe"]["httpGet"] == {"path": "/live", "port": "system"}
    assert {"name": "system", "containerPort": 8081, "protocol": "TCP"} in c["ports"]


def test_images_are_the_seeds(objects, worker):
    assert container(worker, "worker")["image"] == "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:0.9.0"
    frontend = one(objects, "Deployment", "frontend")
    assert container(frontend, "frontend")["image"] == "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:0.9.0"


def test_staging_host_path_and_propagation(worker):
    spec = pod_spec(worker)
    root = next(v for v in spec["volumes"] if v["name"] == "threefs-mount-root")
    # The worker's own directory below the staging root: another group's or release's mount is never its.
    assert root["hostPath"] == {"path": "/tmp/dynamo-3fs-mount/dynamo-test/dynamo-dynamo-offloading-worker",
                                "type": "DirectoryOrCreate"}
    def mount_root(name):
        return next(m for m in container(worker, name)["volumeMounts"] if m["name"] == "threefs-mount-root")

    sidecar_mount, worker_mount = mount_root("fuse-sidecar"), mount_root("worker")
    assert sidecar_mount["mountPath"] == worker_mount["mountPath"] == "/mnt/3fs-root"
    assert sidecar_mount["mountPropagation"] == "Bidirectional"
    assert worker_mount["mountPropagation"] == "HostToContainer"


def test_no_namespace_object(objects):
    assert not [o for o in objects if o["kind"] == "Namespace"]


@pytest.mark.parametrize("mode", ["round-robin", "random", "kv"])
def test_workers_publish_kv_events_only_for_the_kv_router(mode):
    """Dynamo 0.9.0's TRT-LLM worker publishes KV events only with --publish-events-and-metrics
    (components/src/dynamo/trtllm/main.py); without them the KV router has nothing to route by."""
    objects = render(environment_values("ipoib"), {"frontend": {"routerMode": mode}})
    assert f"--router-mode={mode}" in container(one(objects, "Deployment", "frontend"), "frontend")["args"]
    worker_args = container(one(objects, "StatefulSet", "worker"), "worker")["args"]
    assert ("--publish-events-and-metrics" in worker_args) == (mode == "kv")


@pytest.mark.parametrize("engine,expected", [
    ({}, 32),  # TensorRT-LLM's KvCacheConfig.tokens_per_block default
    ({"engine": {"kv_cache_config": {"tokens_per_block": 64}}}, 64),
    ({"extraEngineArgs": {"kv_cache_config": {"tokens_per_block": 16}}}, 16),
])
def test_the_worker_registers_the_engines_kv_block_size(engine, expected):
    """dynamo.trtllm registers and publishes KV events in blocks of --kv-block-size and drops cached blocks of
    another size (dynamo/trtllm/publisher.py): it must be the engine's own, or the KV router learns nothing."""
    objects = render(environment_values("ipoib"), {"worker": engine})
    worker = one(objects, "StatefulSet", "worker")
    engine_yaml = yaml.safe_load(one(objects, "ConfigMap", "engine-config")["data"]["engine.yaml"])
    assert engine_yaml["kv_cache_config"].get("tokens_per_block", 32) == expected
    assert f"--kv-block-size={expected}" in container(worker, "worker")["args"]
