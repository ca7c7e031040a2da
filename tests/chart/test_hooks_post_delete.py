"""The post-delete cleanup as Helm 3 and Helm 4 render it: the coordinator Job, its RBAC, and the
per-node cleanup Job it creates from the chart's template."""

import copy

import pytest
import yaml

from tests.helm import NAMESPACE, container, environment_values, find, helm, node_cleanup_job, one, pod_spec, render

IPOIB = environment_values("ipoib")
NODES = {"worker": {"nodes": ["gpu-a", "gpu-b.rack-2", "gpu-c"]}}
CLEANUP_SA = "dynamo-dynamo-offloading-cleanup"
# The seed's values with a node selector that names no single node.
NO_NODE = copy.deepcopy(IPOIB)
NO_NODE["worker"]["nodeSelector"] = {"nvidia.com/gpu.present": "true"}


def post_delete(objects):
    return [o for o in objects if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "post-delete"]


def arg(args, name):
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


def test_objects_order_and_policies(helm_major):
    hooks = post_delete(render(IPOIB, NODES, major=helm_major))
    by_kind = {o["kind"]: o for o in hooks}
    assert sorted(by_kind) == ["ConfigMap", "Job", "Role", "RoleBinding", "ServiceAccount"]
    weights = {kind: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for kind, o in by_kind.items()}
    assert max(weights["ServiceAccount"], weights["Role"]) < weights["RoleBinding"] < weights["ConfigMap"] \
        < weights["Job"]
    for obj in hooks:
        # Nothing outlives the uninstall, failed or not (Helm prints a failed Job's log first).
        assert obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == \
            "before-hook-creation,hook-succeeded,hook-failed"
    job = by_kind["Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook-output-log-policy"] == "hook-failed"
    assert job["spec"]["backoffLimit"] == 0 and "ttlSecondsAfterFinished" not in job["spec"]
    # Bounded: the wait for worker pods, a node's deadline, and a margin.
    assert job["spec"]["activeDeadlineSeconds"] == 60 + 90 + 60


def test_coordinator_visits_every_node(helm_major):
    objects = render(IPOIB, NODES, major=helm_major)
    job = one(objects, "Job", "cleanup")
    args = container(job, "cleanup")["args"]
    assert args[0] == "cleanup-nodes"
    assert arg(args, "nodes") == "gpu-a,gpu-b.rack-2,gpu-c"
    assert arg(args, "job-template") == "/etc/dynamo-offloading/cleanup/job.yaml"
    assert (arg(args, "pods-wait"), arg(args, "deadline")) == ("60", "90")
    assert (arg(args, "owner-pod-name"), arg(args, "owner-pod-uid")) == ("$(POD_NAME)", "$(POD_UID)")
    worker_labels = one(objects, "StatefulSet", "worker")["spec"]["template"]["metadata"]["labels"]
    selector = dict(term.split("=") for term in arg(args, "worker-selector").split(","))
    assert selector.items() <= worker_labels.items()
    spec = pod_spec(job)
    assert spec["serviceAccountName"] == CLEANUP_SA and spec["automountServiceAccountToken"] is True
    assert "nodeName" not in spec and "hostNetwork" not in spec  # runs anywhere, unprivileged
    assert container(job, "cleanup")["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e.get("valueFrom") for e in container(job, "cleanup")["env"]}
    assert env["POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}  # owner of the per-node Jobs


def test_rbac_is_the_release_namespace_only(helm_major):
    hooks = post_delete(render(IPOIB, NODES, major=helm_major))
    role = one(hooks, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "delete"]},
    ]
    binding = one(hooks, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": CLEANUP_SA, "namespace": NAMESPACE}]


def test_node_job_detaches_the_staging_path_on_its_node(helm_major):
    job = node_cleanup_job(render(IPOIB, NODES, major=helm_major))
    spec = pod_spec(job)
    assert job["kind"] == "Job" and job["spec"]["activeDeadlineSeconds"] == 90
    # The release's ServiceAccount is deleted before post-delete hooks run; the hook's own one is there.
    assert spec["serviceAccountName"] == CLEANUP_SA and spec["automountServiceAccountToken"] is False
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["restartPolicy"] == "Never"
    c = container(job, "cleanup-mounts")
    # Only dead mounts: the release's workers are gone; another release's live mount there stays.
    assert c["args"] == ["cleanup-mounts", "--root=/tmp/dynamo-3fs-mount", "--stale-only"]
    assert c["securityContext"] == {"privileged": True, "runAsUser": 0}
    assert c["volumeMounts"] == [{"name": "staging", "mountPath": "/tmp/dynamo-3fs-mount",
                                  "mountPropagation": "Bidirectional"}]
    assert spec["volumes"] == [{"name": "staging",
                                "hostPath": {"path": "/tmp/dynamo-3fs-mount", "type": "DirectoryOrCreate"}}]


def test_nodes_default_to_the_worker_node_selector():
    args = container(one(render(IPOIB), "Job", "cleanup"), "cleanup")["args"]
    assert arg(args, "nodes") == "p02-r02-cp17"


@pytest.mark.parametrize("base,values", [
    (NO_NODE, {}),  # no node known
    (IPOIB, {"hooks": {"postDelete": {"enabled": False}}}),
    (IPOIB, {"threefs": {"enabled": False}, "kvbm": {"diskCacheDir": "/var/cache/kvbm"}}),  # nothing mounted
])
def test_no_cleanup_without_nodes_or_3fs(base, values):
    assert not post_delete(render(base, values))


def test_notes_say_when_nothing_will_be_cleaned(tmp_path):
    """NOTES.txt is rendered by install; Helm 4's client dry run needs no cluster."""
    from tests.helm import CHART

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(NO_NODE))
    notes = helm(4, "install", "dynamo", str(CHART), "--dry-run=client", "-f", str(values)).stdout.split("NOTES:")[1]
    assert "will not detach the 3FS mounts left in /tmp/dynamo-3fs-mount" in notes
    assert "Set worker.nodes" in notes


def test_only_the_node_job_is_privileged():
    objects = render(IPOIB, NODES)
    assert not [o for o in post_delete(objects) if o["kind"] == "Job"
                and container(o, "cleanup")["securityContext"].get("privileged")]
    assert not find(post_delete(objects), "Job", "cleanup-node")  # created at uninstall time, not by Helm


def test_the_rendered_coordinator_runs_the_rendered_node_job(monkeypatch, tmp_path, capsys):
    """The coordinator's rendered arguments and the rendered per-node Job, run by dynamo-hooks against the
    FAKE Kubernetes API: every node gets its pinned, privileged Job, owned by the coordinator's pod."""
    from dynamo_hooks import cli
    from tests.hooks.cluster import fake_api

    objects = render(IPOIB, NODES)
    template = tmp_path / "job.yaml"
    template.write_text(yaml.safe_dump(node_cleanup_job(objects)))
    # What the kubelet expands, and where the ConfigMap is mounted.
    expand = {"$(POD_NAME)": "dynamo-dynamo-offloading-cleanup-x1",
              "$(POD_UID)": "0b5c1e0e-1111-4222-8333-944455556666",
              "/etc/dynamo-offloading/cleanup/job.yaml": str(template)}
    args = container(one(objects, "Job", "cleanup"), "cleanup")["args"]
    for old, new in expand.items():
        args = [a.replace(old, new) for a in args]
    with fake_api(monkeypatch, tmp_path) as api:
        monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)
        api.on_job_create = lambda fake, job: fake.set_job_condition(NAMESPACE, job["metadata"]["name"], "Complete")
        assert cli.main([*args, "--deadline=5", "--pods-wait=1"]) == 0
        created = [r.body for r in api.requests_to("POST", "/jobs")]
    assert sorted(pod_spec(job)["nodeName"] for job in created) == NODES["worker"]["nodes"]
    for job in created:
        assert job["metadata"]["name"].startswith("dynamo-dynamo-offloading-cleanup-node-")
        assert job["metadata"]["ownerReferences"][0]["uid"] == expand["$(POD_UID)"]
        assert container(job, "cleanup-mounts")["securityContext"]["privileged"] is True
    assert "cleanup: ok (gpu-a, gpu-b.rack-2, gpu-c)" in capsys.readouterr().out


def test_hook_pods_carry_hooks_pod_labels():
    """The pods that run dynamo-hooks in Jobs, the per-node cleanup Jobs' included, get hooks.podLabels."""
    objects = render(IPOIB, NODES, {"hooks": {"podLabels": {"team": "ml"}}})
    templates = [one(objects, "Job", "pre-install")["spec"]["template"],
                 one(objects, "Job", "cleanup")["spec"]["template"],
                 yaml.safe_load(one(objects, "ConfigMap", "cleanup-node")["data"]["job.yaml"])["spec"]["template"]]
    for template in templates:
        labels = template["metadata"]["labels"]
        assert labels["team"] == "ml" and labels["app.kubernetes.io/instance"] == "dynamo"
