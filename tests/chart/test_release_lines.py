"""dynamo.release: each line's runtime image, worker flags and environment, as the chart's one table of them
(_dynamo.tpl dynamo.lines) says; the etcd and NATS a line and its planes do not use are left out everywhere."""

import pytest

from tests.helm import container, env_of, environment_values, find, one, peers_of, render, render_error

IPOIB, STANDALONE, SCALE_OUT = (environment_values(env) for env in ("ipoib", "standalone", "scale-out"))


def dynamo_containers(objects):
    return [container(one(objects, "Deployment", "frontend"), "frontend"),
            *(container(sts, "worker") for sts in find(objects, "StatefulSet", "worker"))]


@pytest.mark.parametrize("release,tag,model_flag,kv_flags,discovery_env", [
    ("0.9", "0.9.0", "--model-path", ["--publish-events-and-metrics"], "DYN_STORE_KV"),
    ("1.6", "1.6.0", "--model", ["--publish-kv-events", "--publish-metrics"], "DYN_DISCOVERY_BACKEND"),
])
def test_each_line_runs_its_image_with_its_flags(release, tag, model_flag, kv_flags, discovery_env):
    objects = render(SCALE_OUT, {"dynamo": {"release": release}})
    for c in dynamo_containers(objects):
        assert c["image"] == f"nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:{tag}"
        env = env_of(c)
        assert (env[discovery_env], env["DYN_EVENT_PLANE"]) == ("etcd", "nats")
        assert env["DYN_SDK_DISABLE_ANSI_LOGGING"] == "1"  # both lines colour their logs, even into a pipe, without it
    for sts in find(objects, "StatefulSet", "worker"):
        worker = container(sts, "worker")
        assert f'exec python3 -m dynamo.trtllm {model_flag}="$MODEL_PATH" "$@"' in worker["command"][2]
        assert [a for a in worker["args"] if a.startswith("--publish")] == kv_flags  # the pool routes by KV events
    # The hooks check etcd and NATS; they are not Dynamo processes.
    assert "DYN_EVENT_PLANE" not in env_of(container(one(objects, "Job", "pre-install"), "pre-install"))


def test_an_image_tag_given_wins_over_the_lines():
    c = dynamo_containers(render(IPOIB, {"dynamo": {"release": "1.6"}, "image": {"tag": "1.6.0-custom"}}))[0]
    assert c["image"].endswith(":1.6.0-custom")


@pytest.mark.parametrize("release,copies", [("0.9", True), ("1.6", False)])
def test_only_0_9_needs_the_model_files_on_the_frontend(release, copies):
    """From 1.4 the worker serves its model's files on its system port (DYN_SELF_HOST_METADATA)."""
    for source in ("download", "hostPath"):
        frontend = one(render(IPOIB, {"dynamo": {"release": release}, "frontend": {"modelFiles": {"source": source}}}),
                       "Deployment", "frontend")
        spec = frontend["spec"]["template"]["spec"]
        has_copy = any(v["name"].startswith("hf-cache") for v in spec["volumes"])
        assert has_copy is copies
        assert bool(spec.get("initContainers")) is (copies and source == "download")


def test_the_zmq_event_plane_on_1_6_leaves_nats_out():
    """NATS is used on 1.6 only by the NATS event plane: with zmq nothing runs, sets or checks it (a 1.x process
    connects to NATS whenever NATS_SERVER is set)."""
    objects = render(STANDALONE, {"dynamo": {"release": "1.6", "eventPlane": "zmq"}})
    assert not [o for o in objects if o["metadata"]["name"].endswith("-nats")]
    for c in dynamo_containers(objects):
        env = env_of(c)
        assert env["DYN_EVENT_PLANE"] == "zmq" and "NATS_SERVER" not in env and "ETCD_ENDPOINTS" in env
    hook = container(one(objects, "Job", "pre-install"), "pre-install")
    assert set(peers_of(hook["args"])) == {"etcd"}
    worker = one(objects, "StatefulSet", "worker")
    assert set(peers_of(container(worker, "resolve")["args"])) == {"etcd"}


def test_0_9_uses_nats_whatever_the_plane_and_1_6_with_the_nats_plane():
    for release in ("0.9", "1.6"):
        objects = render(STANDALONE, {"dynamo": {"release": release}})
        assert one(objects, "StatefulSet", "nats")
        assert all("NATS_SERVER" in env_of(c) for c in dynamo_containers(objects))


@pytest.mark.parametrize("release,setting,value,fixes", [
    ("0.9", "eventPlane", "zmq", "which has nats; --set dynamo.release=1.6, or --set dynamo.eventPlane=nats"),
    ("0.9", "discovery", "kubernetes", "which has etcd; --set dynamo.release=1.6, or --set dynamo.discovery=etcd"),
])
def test_a_line_refuses_what_it_has_not(release, setting, value, fixes):
    message = render_error(IPOIB, {"dynamo": {"release": release, setting: value}})
    assert f"dynamo.{setting}: {value} is not available with dynamo.release {release}, {fixes}" in message


def test_nats_tls_to_an_embedded_nats_needs_1_6():
    tls = {"nats": {"tls": {"enabled": True, "existingSecret": "nats-tls"}}}
    assert "Dynamo 0.9 has no NATS TLS client settings" in render_error(STANDALONE, tls)
    objects = render(STANDALONE, tls, {"dynamo": {"release": "1.6"}})
    assert all(env_of(c)["NATS_TLS_CA_CERT_PATH"] == "/etc/dynamo/nats-tls/ca.crt" for c in dynamo_containers(objects))


KUBERNETES = environment_values("ipoib-kubernetes")


def test_kubernetes_discovery_gives_each_dynamo_process_its_identity_a_token_and_a_role():
    """Dynamo 1.x's Kubernetes discovery reads POD_NAME, POD_UID and POD_NAMESPACE (the DynamoWorkerMetadata a
    worker writes is named after and owned by its pod) and calls the API with the pod's ServiceAccount: each of
    the frontend and the workers gets its own token, mounted into the Dynamo container only, and a Role."""
    objects = render(KUBERNETES)
    for c in dynamo_containers(objects):
        env = c["env"]
        fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in env if "valueFrom" in e
                  and "fieldRef" in e["valueFrom"]}
        assert {k: fields[k] for k in ("POD_NAME", "POD_UID", "POD_NAMESPACE")} == {
            "POD_NAME": "metadata.name", "POD_UID": "metadata.uid", "POD_NAMESPACE": "metadata.namespace"}
        assert env_of(c)["DYN_DISCOVERY_BACKEND"] == "kubernetes"
        assert {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True} in c["volumeMounts"]
    worker = one(objects, "StatefulSet", "worker")
    assert "kube-api-access" not in [m["name"] for m in container(worker, "fuse-sidecar").get("volumeMounts", [])]
    roles = {o["metadata"]["name"]: o["rules"] for o in find(objects, "Role")}
    bindings = {o["subjects"][0]["name"]: o["roleRef"]["name"] for o in find(objects, "RoleBinding")}
    frontend_sa = one(objects, "Deployment", "frontend")["spec"]["template"]["spec"]["serviceAccountName"]
    worker_sa = worker["spec"]["template"]["spec"]["serviceAccountName"]
    assert frontend_sa != worker_sa
    verbs = {sa: {r["resources"][0]: r["verbs"] for r in roles[bindings[sa]]} for sa in (frontend_sa, worker_sa)}
    assert verbs[frontend_sa] == {"endpointslices": ["list", "watch"], "dynamoworkermetadatas": ["list", "watch"]}
    assert verbs[worker_sa] == {"endpointslices": ["list", "watch"],
                                "dynamoworkermetadatas": ["list", "watch", "create", "patch"]}


def test_kubernetes_discovery_finds_ready_workers_through_a_labelled_service():
    """Dynamo reads the EndpointSlices labelled nvidia.com/dynamo-discovery-enabled=true; a worker counts while
    its pod is ready there, so the Service does not publish unready pods (the headless one does)."""
    objects = render(KUBERNETES)
    services = {s["metadata"]["name"]: s for s in find(objects, "Service", "worker")}
    discovery = services["dynamo-dynamo-offloading-worker-discovery"]
    assert discovery["metadata"]["labels"]["nvidia.com/dynamo-discovery-enabled"] == "true"
    assert discovery["metadata"]["labels"]["nvidia.com/dynamo-discovery-backend"] == "kubernetes"
    assert not discovery["spec"].get("publishNotReadyAddresses")
    worker = one(objects, "StatefulSet", "worker")
    assert discovery["spec"]["selector"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()


def test_kubernetes_discovery_with_zmq_runs_no_etcd_nor_nats_and_checks_dynamos_crd_first():
    objects = render(KUBERNETES)
    for c in dynamo_containers(objects):
        env = env_of(c)
        assert not {"ETCD_ENDPOINTS", "NATS_SERVER"} & set(env)
    worker = container(one(objects, "StatefulSet", "worker"), "worker")
    assert env_of(worker)["DYN_EVENT_PLANE_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}  # host network
    hook = one(objects, "Job", "pre-install")
    args = container(hook, "pre-install")["args"]
    assert peers_of(args) == {}
    [required] = [a for a in args if a.startswith("--require=")]
    assert '"resource":"nvidia.com/v1alpha1/dynamoworkermetadatas"' in required and "platform chart" in required
    assert hook["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert not [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-endpoints")]


def test_etcd_discovery_has_no_kubernetes_discovery_objects():
    objects = render(SCALE_OUT, {"dynamo": {"release": "1.6"}})
    assert not [o for o in objects if "dynamo-discovery" in o["metadata"]["name"]]
    assert all("kube-api-access" not in [m["name"] for m in c.get("volumeMounts", [])]
               for c in dynamo_containers(objects))
