"""Every values/<env>.yaml renders, lints and validates against the Kubernetes API schemas."""

import kubernetes_validate
import pytest

from tests.helm import CHART, ENVIRONMENTS, ROOT, environment_values, helm, render, with_embedded

KUBERNETES_VERSIONS = [f"1.{minor}" for minor in range(29, 36)]
# Prometheus Operator kinds: kubernetes-validate has no schema for CRDs and the CRDs are not
# available offline, so these objects are not validated against a schema.
CRD_KINDS = {"PodMonitor", "ServiceMonitor"}
MONITORING_ON = {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}


def test_there_are_environments():
    assert {"ipoib", "standalone"} <= set(ENVIRONMENTS)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_renders(env, helm_major):
    objects = render(environment_values(env), major=helm_major)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "StatefulSet", "ConfigMap", "Service"} <= kinds


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_helm3_and_helm4_render_the_same(env):
    assert render(environment_values(env), major=3) == render(environment_values(env), major=4)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_lint_strict(env, helm_major):
    result = helm(helm_major, "lint", "--strict", str(CHART), "-f", str(ROOT / "values" / f"{env}.yaml"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# Optional objects on, so that they are validated too.
VARIANTS = {
    "as-is": {},
    "fuse-daemonset": {"threefs": {"mode": "daemonset"}},
    "all-on": {**MONITORING_ON, "modelDownloader": {"enabled": True}, "worker": {"nodes": ["gpu-a", "gpu-b"]},
               "etcd": {"tls": {"enabled": True, "existingSecret": "etcd-certs"}},
               "nats": {"auth": {"existingSecret": "nats-creds"}},
               "networkPolicy": {"enabled": True, "nodeCIDRs": ["10.0.0.0/16"],
                                 "frontend": {"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}}},
}


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict(env, variant, version):
    problems = []
    for obj in with_embedded(render(environment_values(env), VARIANTS[variant])):
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {err.message}")
    assert not problems, "\n".join(problems)


def test_validation_catches_a_bad_field():
    """The strict validation above is not vacuous: an unknown container field fails it."""
    deployment = next(o for o in render(environment_values("ipoib")) if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["bogus"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.29", strict=True)


def test_monitoring_objects_render_with_their_crd_kinds():
    objects = render(environment_values("ipoib"), MONITORING_ON)
    kinds = {o["kind"] for o in objects if o["apiVersion"] == "monitoring.coreos.com/v1"}
    assert kinds == CRD_KINDS


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_object_carries_the_standard_labels(env):
    for obj in render(environment_values(env), MONITORING_ON):
        labels = obj["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/version", "helm.sh/chart"):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"


def test_package_holds_the_chart_and_nothing_else(tmp_path):
    """`helm package` keeps the helm test Pod and leaves caches out."""
    import tarfile

    helm(4, "package", str(CHART), "--destination", str(tmp_path))
    [package] = tmp_path.glob("dynamo-offloading-*.tgz")
    names = tarfile.open(package).getnames()
    assert "dynamo-offloading/templates/tests/test-chat-completion.yaml" in names
    assert "dynamo-offloading/values.schema.json" in names and "dynamo-offloading/README.md" in names
    assert not [n for n in names if "__pycache__" in n or ".pytest_cache" in n or n.endswith(".tgz")]


MOUNT_VARIANTS = {
    **VARIANTS,
    # An external NATS: the embedded one cannot require TLS from Dynamo 0.9.0 (a rule refuses it).
    "tls-everywhere": {"etcd": {"tls": {"enabled": True, "existingSecret": "etcd-certs"}},
                       "nats": {"tls": {"enabled": True, "existingSecret": "nats-certs"},
                                "embedded": {"enabled": False},
                                "service": {"namespace": "baseten", "name": "nats-headless"}},
                       "worker": {"nodes": ["gpu-a", "gpu-b"]}},
}


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("variant", MOUNT_VARIANTS)
def test_every_volume_mount_names_a_volume(env, variant):
    """The API server rejects a pod whose container mounts a volume the pod does not have."""
    missing = []
    for obj in with_embedded(render(environment_values(env), MOUNT_VARIANTS[variant])):
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job", "Pod"):
            continue
        spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])}
        missing += [f"{obj['metadata']['name']}/{c['name']}: {m['name']}"
                    for c in spec.get("initContainers", []) + spec["containers"]
                    for m in c.get("volumeMounts", []) if m["name"] not in volumes]
    assert not missing
