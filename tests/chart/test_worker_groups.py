"""Worker groups: one StatefulSet each with the group's values merged over worker and kvbm, a port plan that
keeps host-network workers on one node apart, and the per-node work (cleanup, downloads, 3FS host
directory) for every node of every group."""

import itertools

import pytest
import yaml

from tests.helm import ENVIRONMENTS, container, env_of, environment_values, find, pod_spec, render, render_error

SCALE_OUT = environment_values("scale-out")
PREFIX = "dynamo-dynamo-offloading"


def workers(objects):
    return {o["metadata"]["name"]: o for o in find(objects, "StatefulSet", "worker")}


def nodes_of(sts):
    """The nodes a StatefulSet's pods may use by its required node affinity; None when not pinned."""
    affinity = pod_spec(sts).get("affinity", {}).get("nodeAffinity")
    if not affinity:
        selector = pod_spec(sts).get("nodeSelector", {})
        return {selector["kubernetes.io/hostname"]} if "kubernetes.io/hostname" in selector else None
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return {v for t in terms for e in t["matchExpressions"] if e["key"] == "kubernetes.io/hostname"
            for v in e["values"]}


def host_ports(sts):
    """The ports a pod holds on its node: with hostNetwork every containerPort of every container."""
    spec = pod_spec(sts)
    if not spec.get("hostNetwork"):
        return []
    return [p["containerPort"] for c in spec["containers"] + spec.get("initContainers", []) for p in c.get("ports", [])]


def test_scale_out_has_eight_workers_on_four_nodes_in_two_groups():
    groups = workers(render(SCALE_OUT))
    assert set(groups) == {f"{PREFIX}-worker-qwen3-8b", f"{PREFIX}-worker-qwen3-32b"}
    assert sum(s["spec"]["replicas"] for s in groups.values()) >= 8
    assert len(set().union(*(nodes_of(s) for s in groups.values()))) >= 4
    assert nodes_of(groups[f"{PREFIX}-worker-qwen3-8b"]) & nodes_of(groups[f"{PREFIX}-worker-qwen3-32b"]), \
        "two workers share a node"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_port_is_shared_by_two_workers_that_can_land_on_one_node(env, helm_major):
    groups = list(workers(render(environment_values(env), major=helm_major)).values())
    for sts in groups:
        ports = host_ports(sts)
        assert len(ports) == len(set(ports)), sts["metadata"]["name"]
    for a, b in itertools.combinations(groups, 2):
        nodes_a, nodes_b = nodes_of(a), nodes_of(b)
        if nodes_a is not None and nodes_b is not None and not nodes_a & nodes_b:
            continue
        assert not set(host_ports(a)) & set(host_ports(b)), (a["metadata"]["name"], b["metadata"]["name"])


def test_the_plan_declares_every_port_the_worker_binds_with_its_offset():
    """The env that sets each port and the declared port agree; with KV routing the consolidator's two ports
    join the plan (TRT-LLM's event port, which would otherwise fall back to the leader's held pub port)."""
    groups = workers(render(SCALE_OUT))
    for name, offset in ((f"{PREFIX}-worker-qwen3-32b", 0), (f"{PREFIX}-worker-qwen3-8b", 10)):
        worker = container(groups[name], "worker")
        env = env_of(worker)
        declared = {p["name"]: p["containerPort"] for p in worker["ports"]}
        assert declared == {"system": 8081 + offset, "kvbm-zmq-pub": 56001 + offset, "kvbm-zmq-ack": 56002 + offset,
                            "kvbm-metrics": 6880 + offset, "trtllm-events": 56003 + offset,
                            "consolidator": 57001 + offset}
        assert (env["DYN_SYSTEM_PORT"], env["DYN_KVBM_LEADER_ZMQ_PUB_PORT"], env["DYN_KVBM_LEADER_ZMQ_ACK_PORT"],
                env["DYN_KVBM_METRICS_PORT"], env["DYN_KVBM_TRTLLM_ZMQ_PORT"]) == \
            tuple(str(declared[p]) for p in ("system", "kvbm-zmq-pub", "kvbm-zmq-ack", "kvbm-metrics", "trtllm-events"))
        assert f"127.0.0.1:{declared['system']}/live" in worker["livenessProbe"]["exec"]["command"][2]


def test_without_kv_routing_the_consolidator_ports_are_not_held():
    worker = container(workers(render(SCALE_OUT, {"frontend": {"routerMode": "round-robin"}}))
                       [f"{PREFIX}-worker-qwen3-8b"], "worker")
    assert {p["name"] for p in worker["ports"]} == {"system", "kvbm-zmq-pub", "kvbm-zmq-ack", "kvbm-metrics"}
    assert "DYN_KVBM_TRTLLM_ZMQ_PORT" not in env_of(worker)


def test_groups_on_different_nodes_may_use_the_same_ports():
    apart = {"worker": {"groups": {"qwen3-8b": {"portOffset": 0, "nodes": ["gpu-node-1", "gpu-node-2"]},
                                   "qwen3-32b": {"nodes": ["gpu-node-3", "gpu-node-4"]}}}}
    assert len(workers(render(SCALE_OUT, apart))) == 2
    pools = {"worker": {"groups": {"qwen3-8b": {"portOffset": 0, "nodes": [], "nodeSelector": {"pool": "a"}},
                                   "qwen3-32b": {"nodes": [], "nodeSelector": {"pool": "b"}}}}}
    assert len(workers(render(SCALE_OUT, pools))) == 2


def test_a_group_takes_zero_false_and_lists_from_its_own_values_and_merges_maps():
    groups = workers(render(SCALE_OUT, {"worker": {"groups": {"qwen3-8b": {"kvbm": {"cpuCacheGB": 0},
                                                                          "tolerations": []}}}}))
    small, large = groups[f"{PREFIX}-worker-qwen3-8b"], groups[f"{PREFIX}-worker-qwen3-32b"]
    assert "DYN_KVBM_CPU_CACHE_GB" not in env_of(container(small, "worker")), "0 turns the group's tier off"
    assert "tolerations" not in pod_spec(small)
    assert env_of(container(large, "worker"))["DYN_KVBM_CPU_CACHE_GB"] == "40"
    assert pod_spec(large)["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_each_group_has_its_engine_model_gpus_and_selector():
    objects = render(SCALE_OUT)
    engines = {c["metadata"]["name"]: yaml.safe_load(c["data"]["engine.yaml"])
               for c in find(objects, "ConfigMap", "engine-config")}
    large = engines[f"{PREFIX}-engine-config-qwen3-32b"]
    assert large["tensor_parallel_size"] == 2 and large["max_batch_size"] == 16, "the group's engine over worker's"
    assert engines[f"{PREFIX}-engine-config-qwen3-8b"]["tensor_parallel_size"] == 1
    expected = {"qwen3-8b": (1, "Qwen/Qwen3-8B"), "qwen3-32b": (2, "Qwen/Qwen3-32B")}
    for name, sts in workers(objects).items():
        group = name.removeprefix(f"{PREFIX}-worker-")
        volumes = {v["name"]: v for v in pod_spec(sts)["volumes"]}
        assert volumes["engine-config"]["configMap"]["name"] == f"{PREFIX}-engine-config-{group}"
        labels = sts["spec"]["selector"]["matchLabels"]
        assert labels["dynamo-offloading/worker-group"] == group
        assert labels.items() <= sts["spec"]["template"]["metadata"]["labels"].items()
        anti = pod_spec(sts)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert anti["labelSelector"]["matchLabels"] == labels, "one worker of a group per node, any group beside"
        gpus, repo = expected[group]
        assert container(sts, "worker")["resources"]["limits"]["nvidia.com/gpu"] == gpus
        assert f"--model-repo={repo}" in container(sts, "resolve")["args"]


def test_each_group_mounts_3fs_in_its_own_node_directory():
    dirs = {name: next(v["hostPath"]["path"] for v in pod_spec(sts)["volumes"] if v["name"] == "threefs-mount-root")
            for name, sts in workers(render(SCALE_OUT)).items()}
    assert dirs == {name: f"/tmp/dynamo-3fs-mount/dynamo-test/{name}" for name in dirs}


def test_cleanup_visits_every_node_of_every_group():
    values = {"worker": {"groups": {"qwen3-8b": {"nodes": ["gpu-node-1", "gpu-node-2"]},
                                    "qwen3-32b": {"nodes": ["gpu-node-2", "gpu-node-5"]}}}}
    job = next(j for j in find(render(SCALE_OUT, values), "Job") if j["metadata"]["name"].endswith("-cleanup"))
    args = container(job, "cleanup")["args"]
    assert "--nodes=gpu-node-1,gpu-node-2,gpu-node-5" in args
    assert "--worker-selector=app.kubernetes.io/name=dynamo-offloading,app.kubernetes.io/instance=dynamo," \
           "app.kubernetes.io/component=worker" in args, "every group's pods"


def test_the_frontend_fetches_every_groups_model_files():
    frontend = find(render(SCALE_OUT), "Deployment", "frontend")[0]
    inits = {c["name"]: env_of(c) for c in pod_spec(frontend)["initContainers"]}
    assert {name: env["MODEL_REPO_ID"] for name, env in inits.items()} == {
        "model-files-qwen3-32b": "Qwen/Qwen3-32B", "model-files-qwen3-8b": "Qwen/Qwen3-8B"}


def test_the_downloader_runs_once_per_node_and_model():
    values = {"modelDownloader": {"enabled": True}}
    jobs = find(render(SCALE_OUT, values), "Job", "model-downloader")
    pairs = {(pod_spec(j)["nodeSelector"]["kubernetes.io/hostname"],
              env_of(container(j, "downloader"))["MODEL_REPO_ID"]) for j in jobs}
    assert len(jobs) == len(pairs) == 8
    same_model = {"worker": {"groups": {"qwen3-32b": {"model": {"repoId": "Qwen/Qwen3-8B"}}}}}
    assert len(find(render(SCALE_OUT, values, same_model), "Job", "model-downloader")) == 4


def test_without_groups_the_objects_keep_their_names():
    objects = render(environment_values("ipoib"))
    assert list(workers(objects)) == [f"{PREFIX}-worker"]
    assert [c["metadata"]["name"] for c in find(objects, "ConfigMap", "engine-config")] == [f"{PREFIX}-engine-config"]
    selector = workers(objects)[f"{PREFIX}-worker"]["spec"]["selector"]["matchLabels"]
    assert "dynamo-offloading/worker-group" not in selector


def test_kvbm_metrics_of_one_group_reach_the_service_and_the_pod_monitor():
    values = {"kvbm": {"metrics": {"enabled": False}}, "metrics": {"podMonitor": {"enabled": True}},
              "worker": {"groups": {"qwen3-8b": {"kvbm": {"metrics": {"enabled": True}}}}}}
    objects = render(SCALE_OUT, values)
    service = find(objects, "Service", "worker")[0]
    assert "kvbm-metrics" in [p["targetPort"] for p in service["spec"]["ports"]]
    monitor = find(objects, "PodMonitor", "worker")[0]
    assert "kvbm-metrics" in [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]]
    off = render(SCALE_OUT, {"kvbm": {"metrics": {"enabled": False}}})
    assert "kvbm-metrics" not in [p["targetPort"] for p in find(off, "Service", "worker")[0]["spec"]["ports"]]


def test_the_pre_install_job_stands_on_a_node_of_the_first_group():
    job = find(render(SCALE_OUT), "Job", "pre-install")[0]
    terms = pod_spec(job)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    first = SCALE_OUT["worker"]["groups"][sorted(SCALE_OUT["worker"]["groups"])[0]]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == first["nodes"]
    assert pod_spec(job)["hostNetwork"] is True


def endpoint_of(sts):
    (endpoint,) = [a.removeprefix("--endpoint=") for a in container(sts, "worker")["args"]
                   if a.startswith("--endpoint=")]
    return endpoint


def test_each_served_model_has_its_own_dynamo_endpoint_and_a_model_s_groups_share_it():
    """Dynamo 1.x refuses a second model on an endpoint (the worker exits), and 0.9 lists one endpoint's
    workers for every model registered there."""
    endpoints = {name.removeprefix(f"{PREFIX}-worker-"): endpoint_of(sts)
                 for name, sts in workers(render(SCALE_OUT)).items()}
    assert endpoints == {"qwen3-8b": "dyn://dynamo.qwen-qwen3-8b.generate",
                         "qwen3-32b": "dyn://dynamo.qwen-qwen3-32b.generate"}
    same_model = {"worker": {"groups": {"qwen3-32b": {"model": {"repoId": "Qwen/Qwen3-8B"}}}}}
    assert {endpoint_of(sts) for sts in workers(render(SCALE_OUT, same_model)).values()} == {
        "dyn://dynamo.qwen-qwen3-8b.generate"}


def test_two_served_names_that_make_one_endpoint_are_refused():
    clash = {"worker": {"groups": {"qwen3-32b": {"model": {"servedModelName": "qwen-qwen3-8b"}}}}}
    assert "qwen-qwen3-8b and Qwen/Qwen3-8B both make the Dynamo endpoint dyn://dynamo.qwen-qwen3-8b.generate" \
        in render_error(SCALE_OUT, clash)
