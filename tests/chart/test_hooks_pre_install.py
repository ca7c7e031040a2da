"""The pre-install hook's objects and the worker's resolve sidecar, as Helm 3 and Helm 4 render them."""

import pytest

from dynamo_hooks import cli
from tests.helm import NAMESPACE, container, env_of, environment_values, find, one, peers_of, pod_spec, render

IPOIB = environment_values("ipoib")
STANDALONE = environment_values("standalone")
HOOK_KINDS = ("ServiceAccount", "Role", "RoleBinding", "Job")
RECORD = "dynamo-dynamo-offloading-endpoints"


def hook_objects(objects):
    """The pre-install/pre-upgrade hooks (not the `helm test` Pod)."""
    return [o for o in objects if "pre-install" in o["metadata"].get("annotations", {}).get("helm.sh/hook", "")]


def weight(obj):
    return int(obj["metadata"]["annotations"]["helm.sh/hook-weight"])


def args_of(obj, name):
    return container(obj, name)["args"]


def test_hook_objects_and_their_order(helm_major):
    hooks = hook_objects(render(IPOIB, major=helm_major))
    assert sorted({o["kind"] for o in hooks}) == sorted(HOOK_KINDS)
    job = one(hooks, "Job")
    for obj in hooks:
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade", obj["metadata"]["name"]
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        if obj is not job:
            # Helm sorts equal weights by name, not kind: the Job's RBAC must come strictly first.
            assert weight(obj) < weight(job), obj["metadata"]["name"]
    assert weight(one(hooks, "ServiceAccount")) <= min(weight(o) for o in find(hooks, "Role"))
    assert max(weight(o) for o in find(hooks, "Role")) < min(weight(o) for o in find(hooks, "RoleBinding"))


def test_job_fails_visibly_and_never_lingers(helm_major):
    job = one(render(IPOIB, major=helm_major), "Job", "pre-install")
    assert job["metadata"]["annotations"]["helm.sh/hook-output-log-policy"] == "hook-failed"
    assert job["spec"]["activeDeadlineSeconds"] == 180
    assert job["spec"]["backoffLimit"] == 1
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_job_verifies_from_where_the_worker_stands(helm_major):
    objects = render(IPOIB, major=helm_major)
    job, worker = pod_spec(one(objects, "Job", "pre-install")), pod_spec(one(objects, "StatefulSet", "worker"))
    for field in ("hostNetwork", "dnsPolicy", "nodeSelector", "tolerations"):
        assert job[field] == worker[field], field
    args = args_of(one(objects, "Job", "pre-install"), "pre-install")
    assert args[0] == "pre-install"
    assert peers_of(args) == {"etcd": (("service", "baseten", "etcd-headless", "client", 2379, False), "required"),
                              "nats": (("service", "baseten", "nats-headless", "nats", 4222, False), "required")}
    expected = {"--resolve", "--mgmtd-addresses=RDMA://10.2.10.55:8010", "--cluster-id=ipoib", "--mgmtd-check=required",
                f"--record-name={RECORD}", "--timeout=5"}
    assert expected <= set(args)


def test_checks_can_warn_or_be_off():
    values = {"hooks": {"preInstall": {"checks": {"etcd": "warn", "nats": "off", "mgmtd": "warn"},
                                       "strictDecode": True}}}
    objects = render(IPOIB, values)
    args = args_of(one(objects, "Job", "pre-install"), "pre-install")
    assert {"--mgmtd-check=warn", "--strict"} <= set(args)
    assert [check for _, check in peers_of(args).values()] == ["warn", "off"]
    # The resolve sidecar waits as the checks say: not for an off check, and goes on after a warn one.
    resolve = args_of(one(objects, "StatefulSet", "worker"), "resolve")
    assert [check for _, check in peers_of(resolve).values()] == ["warn", "off"]


def test_hook_rbac_is_least_privilege(helm_major):
    objects = hook_objects(render(IPOIB, major=helm_major))
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r["rules"] for r in find(objects, "Role")}
    discovery = roles.pop(("baseten", f"dynamo-dynamo-offloading-pre-install-{NAMESPACE}-discovery"))
    assert discovery == [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
    ]
    record = roles.pop((NAMESPACE, "dynamo-dynamo-offloading-pre-install-record"))
    assert not roles
    # The chart creates the record ConfigMap: the hook only patches that one, so it needs no create.
    assert record == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [RECORD], "verbs": ["patch"]}]
    for binding in find(objects, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dynamo-dynamo-offloading-pre-install",
                                        "namespace": NAMESPACE}]
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]


def test_record_configmap_belongs_to_the_release_without_data():
    """Helm owns it (deleted on uninstall); it renders no data, so upgrades never overwrite the hook's keys."""
    record = one(render(IPOIB), "ConfigMap", "endpoints")
    assert record["metadata"]["name"] == RECORD
    assert "data" not in record and "helm.sh/hook" not in record["metadata"].get("annotations", {})


def test_worker_resolves_at_every_start_with_its_own_rbac(helm_major):
    objects = render(IPOIB, major=helm_major)
    worker = one(objects, "StatefulSet", "worker")
    spec = pod_spec(worker)
    assert spec["serviceAccountName"] == "dynamo-dynamo-offloading-worker"
    assert spec["initContainers"][0]["name"] == "resolve"
    resolve = spec["initContainers"][0]
    assert "--record-dir=/etc/dynamo-offloading/record" in resolve["args"]
    assert "--wait=600" in resolve["args"]
    assert [check for _, check in peers_of(resolve["args"]).values()] == ["required", "required"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    # Fallback when the API cannot be read: the hook's record, served by the kubelet; absent after --no-hooks.
    assert volumes["endpoints-record"]["configMap"] == {"name": RECORD, "optional": True}
    assert {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}} in \
        volumes["kube-api-access"]["projected"]["sources"]
    # Its own RBAC, not hooks: read the Services' EndpointSlices there, patch the record here.
    worker_roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r["rules"]
                    for r in find(objects, "Role", "worker")}
    assert sorted(worker_roles) == [("baseten", f"dynamo-dynamo-offloading-worker-{NAMESPACE}-discovery"),
                                    (NAMESPACE, "dynamo-dynamo-offloading-worker-record")]
    assert worker_roles[(NAMESPACE, "dynamo-dynamo-offloading-worker-record")] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [RECORD], "verbs": ["patch"]}]
    assert not [r for r in find(objects, "Role", "worker") if "helm.sh/hook" in r["metadata"].get("annotations", {})]
    for binding in find(objects, "RoleBinding", "worker"):
        assert binding["subjects"][0]["name"] == "dynamo-dynamo-offloading-worker"
    assert f"--record-name={RECORD}" in resolve["args"]


def test_embedded_servers_are_left_to_the_init_container():
    """Embedded etcd/NATS are created after pre-install hooks: the hook skips them, the resolve sidecar waits."""
    no_service = {"name": "", "namespace": ""}
    values = {"etcd": {"embedded": {"enabled": True}, "service": no_service},
              "nats": {"embedded": {"enabled": True}, "service": no_service}}
    objects = render(IPOIB, values)
    args = args_of(one(objects, "Job", "pre-install"), "pre-install")
    assert [source for source, _ in peers_of(args).values()] == [
        ("service", NAMESPACE, "dynamo-dynamo-offloading-etcd", "client", 2379, True),
        ("service", NAMESPACE, "dynamo-dynamo-offloading-nats", "client", 4222, True)]
    assert {r["metadata"]["namespace"] for r in find(objects, "Role", "worker")} == {NAMESPACE}


def test_pod_network_worker_uses_dns_and_no_api():
    objects = render(STANDALONE)
    job = one(objects, "Job", "pre-install")
    assert pod_spec(job)["hostNetwork"] is False and pod_spec(job)["automountServiceAccountToken"] is False
    assert "--resolve" not in args_of(job, "pre-install")
    assert not find(objects, "Role") and not find(objects, "ConfigMap", "endpoints")


@pytest.mark.parametrize("snapshot,expected", [("", None), ("abc123", "--model-snapshot=abc123")])
def test_model_snapshot_or_revision(snapshot, expected):
    args = args_of(one(render(IPOIB, {"worker": {"model": {"snapshot": snapshot}}}), "StatefulSet", "worker"),
                   "resolve")
    assert [a for a in args if a.startswith("--model-snapshot")] == ([expected] if expected else [])


def test_hook_can_be_turned_off():
    objects = render(IPOIB, {"hooks": {"preInstall": {"enabled": False}}})
    assert not hook_objects(objects)
    assert container(one(objects, "StatefulSet", "worker"), "resolve")


def test_hooks_image_defaults_to_the_chart_version():
    job = one(render(IPOIB), "Job", "pre-install")
    assert container(job, "pre-install")["image"] == "PLACEHOLDER-registry:5000/dynamo-offloading-hooks:0.1.0"
    job = one(render(IPOIB, {"hooks": {"image": {"registry": "reg.local:5000"}}}), "Job", "pre-install")
    assert container(job, "pre-install")["image"] == "reg.local:5000/dynamo-offloading-hooks:0.1.0"
    full = {"hooks": {"image": {"registry": "", "repository": "reg:5000/hooks", "tag": "dev"}}}
    assert container(one(render(IPOIB, full), "Job", "pre-install"), "pre-install")["image"] == "reg:5000/hooks:dev"


def test_tls_and_credentials_reach_the_checks():
    nats_tls = {"nats": {"tls": {"enabled": True, "existingSecret": "nats-tls"}}}
    password = {"etcd": {"auth": {"existingSecret": "etcd-creds"}}}
    certificate = {"etcd": {"tls": {"enabled": True, "existingSecret": "etcd-tls"}}}

    def env_of_job(*values):
        c = container(one(render(IPOIB, *values), "Job", "pre-install"), "pre-install")
        return c, {e["name"]: e.get("valueFrom", e.get("value")) for e in c["env"]}

    _, env = env_of_job(password)
    assert env["ETCD_AUTH_PASSWORD"] == {"secretKeyRef": {"name": "etcd-creds", "key": "password"}}
    c, env = env_of_job(certificate, nats_tls)
    assert env["ETCD_AUTH_CA"] == {"secretKeyRef": {"name": "etcd-tls", "key": "ca.crt"}}
    assert env["NATS_TLS_CA_CERT_PATH"] == "/etc/dynamo/nats-tls/ca.crt"
    nats = cli.build_parser().parse_args(c["args"]).nats
    assert (nats.cert, nats.key) == ("/etc/dynamo/nats-tls/tls.crt", "/etc/dynamo/nats-tls/tls.key")
    assert {"name": "nats-tls", "mountPath": "/etc/dynamo/nats-tls", "readOnly": True} in c["volumeMounts"]


@pytest.mark.parametrize("env", ["ipoib", "standalone"])
def test_hooks_run_read_only_with_a_writable_tmp(env):
    """Client certificates given as PEM content are written to /tmp for the TLS library."""
    objects = render(environment_values(env))
    for obj, name in ((one(objects, "Job", "pre-install"), "pre-install"),
                      (one(objects, "StatefulSet", "worker"), "resolve")):
        c = container(obj, name)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["runAsNonRoot"] is True
        assert {"name": "hooks-tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
        assert volumes["hooks-tmp"] == {"name": "hooks-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}


def test_an_explicit_api_server_for_host_network_pods():
    """Where ClusterIPs are unreachable from the host network, the hooks reach the API server by address."""
    objects = render(IPOIB, {"hooks": {"apiServer": "10.2.10.1:6443"}})
    for obj, name in ((one(objects, "Job", "pre-install"), "pre-install"),
                      (one(objects, "StatefulSet", "worker"), "resolve")):
        env = env_of(container(obj, name))
        assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("10.2.10.1", "6443")
    assert "KUBERNETES_SERVICE_HOST" not in env_of(container(one(render(IPOIB), "Job", "pre-install"),
                                                             "pre-install"))
