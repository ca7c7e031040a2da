"""Who is privileged, mount propagation, tokens, and the API-server rules a schema misses."""

import base64
import json

import pytest

from tests.helm import (
    CHART,
    container,
    containers,
    environment_values,
    find,
    helm,
    one,
    pod_spec,
    render,
    render_error,
    workloads,
)

NO_SERVICE = {"name": "", "namespace": ""}
EVERYTHING_ON = {
    "etcd": {"embedded": {"enabled": True}, "service": NO_SERVICE},
    "nats": {"embedded": {"enabled": True}, "service": NO_SERVICE},
    "modelDownloader": {"enabled": True},
    "worker": {"nodes": ["gpu-a", "gpu-b"]},
}
TOKEN = "s3cr3t-3fs-token-value"
WITH_TOKEN = {"threefs": {"existingSecret": "", "token": TOKEN}}


def all_workloads(env):
    return workloads(render(environment_values(env), EVERYTHING_ON))


@pytest.mark.parametrize("env", ["ipoib", "standalone"])
def test_only_the_fuse_sidecar_is_privileged(env):
    privileged = [
        (w["metadata"]["name"], c["name"])
        for w in all_workloads(env) for c in containers(w)
        if c.get("securityContext", {}).get("privileged")
    ]
    expected = [("dynamo-dynamo-offloading-worker", "fuse-sidecar")] if env == "ipoib" else []
    assert privileged == expected


@pytest.mark.parametrize("env", ["ipoib", "standalone"])
def test_unprivileged_containers_are_restricted(env):
    for w in all_workloads(env):
        for c in containers(w):
            sc = c["securityContext"]
            if sc.get("privileged"):
                continue
            where = f"{w['metadata']['name']}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert "resources" in c and c["resources"].get("limits"), where


@pytest.mark.parametrize("env", ["ipoib", "standalone"])
def test_only_the_resolvers_and_the_cleanup_get_a_service_account_token(env):
    """No ServiceAccount automounts its token. The pre-install Job mounts one only when it resolves
    Services, the post-delete Job when it has nodes to clean; the worker projects one into its resolve
    sidecar alone, never into the worker."""
    values = environment_values(env)
    resolves = values["worker"]["hostNetwork"]
    for w in all_workloads(env):
        component = w["metadata"]["labels"]["app.kubernetes.io/component"]
        cleans = values["threefs"]["enabled"] and component == "cleanup"
        expected = (resolves and component == "pre-install") or cleans
        assert pod_spec(w)["automountServiceAccountToken"] is expected, w["metadata"]["name"]
        for c in containers(w):
            token_mounts = [m for m in c.get("volumeMounts", []) if m["name"] == "kube-api-access"]
            assert bool(token_mounts) == (resolves and c["name"] == "resolve"), (w["metadata"]["name"], c["name"])
    for sa in find(render(environment_values(env), EVERYTHING_ON), "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("env", ["ipoib", "standalone"])
def test_bidirectional_propagation_only_in_privileged_containers(env):
    """The API server rejects Bidirectional in an unprivileged container."""
    for w in all_workloads(env):
        for c in containers(w):
            for m in c.get("volumeMounts", []):
                if m.get("mountPropagation") == "Bidirectional":
                    assert c["securityContext"].get("privileged") is True, c["name"]


def test_privileged_containers_do_not_forbid_privilege_escalation():
    """The API server rejects privileged: true with allowPrivilegeEscalation: false."""
    for w in all_workloads("ipoib"):
        for c in containers(w):
            sc = c["securityContext"]
            if sc.get("privileged"):
                assert sc.get("allowPrivilegeEscalation") is not False


def test_fuse_sidecar_is_a_native_sidecar_gating_the_worker():
    worker = one(render(environment_values("ipoib")), "StatefulSet", "worker")
    init = pod_spec(worker)["initContainers"]
    assert [c["name"] for c in init] == ["resolve", "fuse-sidecar"]
    sidecar = init[1]
    assert sidecar["restartPolicy"] == "Always"
    probe = " ".join(sidecar["startupProbe"]["exec"]["command"])
    assert "fuse\\.hf3fs" in probe and "/mnt/3fs-root/3fs" in probe
    assert "umount -l" in " ".join(sidecar["lifecycle"]["preStop"]["exec"]["command"])
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert {"/dev/fuse", "/etc/3fs", "/etc/3fs-token"} <= mounts


def test_native_sidecar_needs_kubernetes_1_29(helm_major):
    """restartPolicy on an init container is ignored before 1.29 (the mount gate would vanish)."""
    args = ["template", "dynamo", str(CHART), "-f", "values/ipoib.yaml"]
    old = helm(helm_major, *args, "--kube-version", "1.28.0", check=False)
    assert old.returncode != 0
    assert "kubeVersion" in old.stderr or "1.29" in old.stderr
    assert helm(helm_major, *args, "--kube-version", "1.29.0").returncode == 0


def test_rdma_transport_brings_ib_devices_and_memlock():
    values = {"threefs": {"transport": "rdma"}}
    worker = one(render(environment_values("ipoib"), values), "StatefulSet", "worker")
    sidecar = container(worker, "fuse-sidecar")
    assert "ulimit -l unlimited" in sidecar["command"][2]
    assert {"name": "dev-infiniband", "mountPath": "/dev/infiniband"} in sidecar["volumeMounts"]
    launcher = one(render(environment_values("ipoib"), values), "ConfigMap", "fuse-launcher")
    assert "force_use_tcp = false" in launcher["data"]["launcher.toml"]


def test_token_is_only_in_a_secret():
    objects = render(environment_values("ipoib"), WITH_TOKEN)
    secret = one(objects, "Secret", "threefs-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    others = [o for o in objects if o is not secret]
    assert TOKEN not in json.dumps(others)
    assert base64.b64encode(TOKEN.encode()).decode() not in json.dumps(others)


def test_existing_secret_means_no_token_secret_is_rendered():
    objects = render(environment_values("ipoib"))
    assert not find(objects, "Secret")
    worker = one(objects, "StatefulSet", "worker")
    token = next(v for v in pod_spec(worker)["volumes"] if v["name"] == "threefs-token")
    assert token["secret"]["secretName"] == "threefs-token"


def test_fuse_image_is_required_when_3fs_is_on():
    values = {"threefs": {"fuse": {"image": {"repository": "", "tag": ""}}}}
    message = render_error(environment_values("ipoib"), values)
    assert "threefs.fuse.image: repository and tag (or digest) are required" in message


def test_standalone_has_no_sidecar_and_no_3fs_objects():
    objects = render(environment_values("standalone"))
    worker = one(objects, "StatefulSet", "worker")
    assert [c["name"] for c in pod_spec(worker)["initContainers"]] == ["resolve"]
    assert not find(objects, "ConfigMap", "fuse-launcher")
    assert not find(objects, "Secret")
    names = {v["name"] for v in pod_spec(worker)["volumes"]}
    assert not names & {"threefs-mount-root", "dev-fuse", "threefs-token"}


def test_images_by_digest():
    digest = "sha256:" + "a" * 64
    objects = render(environment_values("ipoib"), {"image": {"digest": digest}})
    worker = one(objects, "StatefulSet", "worker")
    assert pod_spec(worker)["containers"][0]["image"] == f"nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime@{digest}"


def test_image_pull_secrets_on_every_pod():
    objects = render(environment_values("ipoib"), EVERYTHING_ON, {"imagePullSecrets": [{"name": "regcred"}]})
    for w in workloads(objects):
        assert pod_spec(w)["imagePullSecrets"] == [{"name": "regcred"}], w["metadata"]["name"]
