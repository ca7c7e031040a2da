"""cleanup_nodes and `dynamo-hooks cleanup-nodes` against the FAKE Kubernetes API, whose Jobs the tests finish
at chosen times, fail, or leave pending, with worker pods that linger, which a real control plane without
kubelets does not do on cue. tests/e2e/test_cleanup_in_cluster.py runs the coordinator through the real server."""

import json
import re
import threading
import time

import pytest
import yaml

from dynamo_hooks import cli
from dynamo_hooks.node_cleanup import NODE_ANNOTATION, NODE_LABEL, cleanup_nodes, job_name, node_label, pod_owner
from testbed.fake_kube_api import FakeKubeApi, api_client_for, pod
from tests.hooks.cluster import dead_url, fake_api
from tests.timing import LONG_TIMEOUT, SLACK

NS = "baseten"
WORKERS = "app.kubernetes.io/instance=dynamo,app.kubernetes.io/component=worker"
WORKER_LABELS = {"app.kubernetes.io/instance": "dynamo", "app.kubernetes.io/component": "worker"}
CLEANUP_LABELS = {"app.kubernetes.io/instance": "dynamo", "app.kubernetes.io/component": "mount-cleanup"}
OWNER = pod_owner("dynamo-cleanup-coordinator-x7k2p", "6f1c2a4e-0d9b-4c51-9a57-3e8f0b1d2c3a")
TEMPLATE = {
    "apiVersion": "batch/v1", "kind": "Job",
    "metadata": {"name": "dynamo-mount-cleanup", "labels": CLEANUP_LABELS},
    "spec": {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": CLEANUP_LABELS},
            "spec": {
                "restartPolicy": "Never",
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "cleanup", "image": "ghcr.io/example/dynamo-hooks:0.1.0",
                                "args": ["cleanup-mounts", "--root", "/tmp/dynamo-3fs-mount"],
                                "securityContext": {"privileged": True},
                                "volumeMounts": [{"name": "staging", "mountPath": "/tmp/dynamo-3fs-mount",
                                                  "mountPropagation": "Bidirectional"}]}],
                "volumes": [{"name": "staging", "hostPath": {"path": "/tmp/dynamo-3fs-mount",
                                                             "type": "DirectoryOrCreate"}}],
            },
        },
    },
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@pytest.fixture
def fake():
    with FakeKubeApi() as server:
        yield server


def node_of(job):
    return job["spec"]["template"]["spec"]["nodeName"]


def drive(outcomes, after=0.2, created=None):
    """on_job_create: finish each node's Job as `outcomes` says ("Complete", "Failed"; absent: it stays
    pending), `after` seconds later; note when each node's Job was created in `created`."""
    def on_create(fake, job):
        node = node_of(job)
        if created is not None:
            created[node] = time.monotonic()
        if outcomes.get(node):
            fake.set_job_condition(NS, job["metadata"]["name"], outcomes[node], after=after)
    return on_create


def run(fake, nodes, pods_wait=0.5, deadline=2.0, owner=OWNER, template=TEMPLATE, logs=None, api=None):
    return cleanup_nodes(api or fake.api_client(), NS, nodes, template, WORKERS, owner, pods_wait, deadline, 2.0,
                         poll=0.05, log=logs.append if logs is not None else (lambda message: None))


def by_node(report):
    return {f.peer: f for f in report.findings}


def created_jobs(fake):
    return [r.body for r in fake.requests_to("POST", "/jobs")]


def test_all_nodes_complete(fake):
    fake.on_job_create = drive({"node-a": "Complete", "node-b": "Complete", "node-c": "Complete"})
    logs = []
    report = run(fake, ["node-a", "node-b", "node-c"], logs=logs)
    assert report.ok and report.check == "cleanup"
    assert [(f.peer, f.status, f.reason) for f in report.findings] == [
        ("node-a", "ok", "ok"), ("node-b", "ok", "ok"), ("node-c", "ok", "ok")]
    assert report.findings[0].message == f"cleanup Job {NS}/dynamo-mount-cleanup-node-a completed on node node-a"
    assert report.findings[0].details["condition"]["type"] == "Complete"
    # completed Jobs are deleted, their pods with them (batch/v1 would orphan them without Background)
    assert fake.objects["jobs"] == {} and fake.objects["pods"] == {}
    deletes = fake.requests_to("DELETE", "/jobs/")
    assert len(deletes) == 3 and all(d.body["propagationPolicy"] == "Background" for d in deletes)
    assert f"cleanup node-b: created Job {NS}/dynamo-mount-cleanup-node-b" in logs


def test_a_node_that_never_runs_its_job_is_a_warning_within_the_deadline(fake):
    def on_create(fake, job):
        if node_of(job) == "node-down":  # the kubelet never starts it
            (stored,) = [p for p in fake.objects["pods"].values()
                         if p["metadata"]["labels"]["job-name"] == job["metadata"]["name"]]
            stored["status"]["containerStatuses"] = [{
                "name": "cleanup", "ready": False, "restartCount": 0, "image": "ghcr.io/example/dynamo-hooks:0.1.0",
                "imageID": "", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}}}]
        else:
            fake.set_job_condition(NS, job["metadata"]["name"], "Complete", after=0.2)

    fake.on_job_create = on_create
    started = time.monotonic()
    report = run(fake, ["node-a", "node-down", "node-b"], deadline=1.5)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + SLACK
    assert report.ok, report.summary()
    findings = by_node(report)
    assert (findings["node-a"].status, findings["node-b"].status) == ("ok", "ok")
    down = findings["node-down"]
    assert (down.status, down.reason) == ("warning", "not-run")
    name = "dynamo-mount-cleanup-node-down"
    assert down.message.startswith(f"node node-down did not run the cleanup Job {NS}/{name} to completion within "
                                   f"1.5 s (its pod {name}-")
    assert "Pending (ImagePullBackOff)" in down.message
    assert "the Job was deleted" in down.message
    assert down.message.endswith("the node's 3FS mounts will be healed when a worker next starts there")
    # nothing is left behind: a pending Job would start when the node comes back
    assert fake.get("jobs", NS, name) is None and fake.job_pods(NS, name) == []


def test_a_failed_job_fails_the_report_and_prints_its_log(fake):
    coordinator = pod(NS, OWNER["name"], "node-x", CLEANUP_LABELS)
    coordinator["metadata"]["uid"] = OWNER["uid"]
    fake.add_pod(coordinator)
    finish = drive({"node-a": "Complete", "node-b": "Failed", "node-c": "Complete"})

    def on_create(fake, job):
        for job_pod in fake.job_pods(NS, job["metadata"]["name"]):
            fake.pod_logs[(NS, job_pod["metadata"]["name"])] = "could not detach /tmp/dynamo-3fs-mount/3fs\n"
        finish(fake, job)

    fake.on_job_create = on_create
    logs = []
    report = run(fake, ["node-a", "node-b", "node-c"], logs=logs)
    assert not report.ok
    findings = by_node(report)
    assert [findings[n].status for n in ("node-a", "node-b", "node-c")] == ["ok", "error", "ok"]
    failed = findings["node-b"]
    name = "dynamo-mount-cleanup-node-b"
    assert failed.reason == "failed"
    assert failed.message == (f"the cleanup Job {NS}/{name} failed on node node-b (BackoffLimitExceeded; Job has "
                              f"reached the specified backoff limit): its 3FS mounts may still be attached (its log "
                              f"is above)")
    # The Job goes with the coordinator, whose own log Helm shows: the pod's last lines are printed there.
    assert failed.details["log"] == "could not detach /tmp/dynamo-3fs-mount/3fs\n"
    assert f"cleanup node-b: Job {NS}/{name} failed; its log ends:\ncould not detach /tmp/dynamo-3fs-mount/3fs" in logs
    assert report.summary() == f"cleanup node-b: {failed.message}"
    assert set(k[1] for k in fake.objects["jobs"]) == {name}
    # the garbage collector removes it with its owner, the coordinator's Pod
    fake.delete("pods", NS, OWNER["name"])
    assert fake.objects["jobs"] == {} and fake.objects["pods"] == {}


def test_worker_pods_on_a_node_hold_its_job_back_while_other_nodes_go_on(fake):
    fake.add_pod(pod(NS, "dynamo-worker-a", "node-a", WORKER_LABELS, terminating=True))
    fake.add_pod(pod(NS, "dynamo-worker-old", "node-b", WORKER_LABELS, phase="Succeeded"))  # done: no wait
    fake.add_pod(pod(NS, "dynamo-worker-c", "node-c", WORKER_LABELS))  # another node
    fake.add_pod(pod(NS, "dynamo-frontend", "node-b", {**WORKER_LABELS, "app.kubernetes.io/component": "frontend"}))
    created, deleted = {}, []
    fake.on_job_create = drive({"node-a": "Complete", "node-b": "Complete"}, after=0.1, created=created)

    def worker_a_leaves():
        deleted.append(time.monotonic())
        fake.delete("pods", NS, "dynamo-worker-a")

    timer = threading.Timer(1.0, worker_a_leaves)
    timer.start()
    logs = []
    try:
        report = run(fake, ["node-a", "node-b"], pods_wait=5, logs=logs)
    finally:
        timer.cancel()
    assert report.ok and [f.reason for f in report.findings] == ["ok", "ok"]
    # In order, not by the clock: node-b's Job did not wait for node-a's worker; node-a's did.
    assert created["node-b"] < deleted[0] <= created["node-a"]
    assert "cleanup node-a: waiting up to 5 s for 1 worker pod(s) to leave: dynamo-worker-a" in logs
    lists = [r.query for r in fake.requests_to("GET", f"/api/v1/namespaces/{NS}/pods")]
    assert {"labelSelector": WORKERS, "fieldSelector": "spec.nodeName=node-a"} in lists


def test_worker_pods_that_never_go_are_a_warning_and_the_cleanup_runs_anyway(fake):
    fake.add_pod(pod(NS, "dynamo-worker-a", "node-a", WORKER_LABELS, terminating=True))
    fake.add_pod(pod(NS, "dynamo-worker-a2", "node-a", WORKER_LABELS, phase="Pending"))
    fake.on_job_create = drive({"node-a": "Complete", "node-b": "Complete"}, after=0.1)
    report = run(fake, ["node-a", "node-b"], pods_wait=0.5)
    assert report.ok
    a = by_node(report)["node-a"]
    assert (a.status, a.reason) == ("warning", "workers-remain")
    assert a.details["workers"] == ["dynamo-worker-a", "dynamo-worker-a2"]
    assert "worker pods were still there after 0.5 s (dynamo-worker-a, dynamo-worker-a2)" in a.message
    assert by_node(report)["node-b"].reason == "ok"
    assert {node_of(j) for j in created_jobs(fake)} == {"node-a", "node-b"}


def test_job_names_are_dns_labels_of_at_most_63_characters():
    assert job_name("dynamo-mount-cleanup", "node-a") == "dynamo-mount-cleanup-node-a"
    dotted = job_name("dynamo-mount-cleanup", "ip-10-0-1-5.us-west-2.compute.internal")
    assert re.fullmatch(r"dynamo-mount-cleanup-ip-10-0-1-5-us-west-2-compute-int-[0-9a-f]{8}", dotted)
    # a dotted name never takes the name of the dashed one, and the same node always gets the same name
    assert job_name("x", "a.b") != job_name("x", "a-b") == "x-a-b"
    assert job_name("x", "a.b") == job_name("x", "a.b")
    long_node = "gpu-" + ".".join(["segment-with-some-length"] * 9)
    for base in ("dynamo-mount-cleanup", "a" * 70):
        for node in ("node-a", "ip-10-0-1-5.us-west-2.compute.internal", long_node, "n" * 63):
            name = job_name(base, node)
            assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert node_label("ip-10-0-1-5.us-west-2.compute.internal") == "ip-10-0-1-5.us-west-2.compute.internal"
    assert len(node_label(long_node)) <= 63 and LABEL_VALUE.match(node_label(long_node))


def test_created_job_is_pinned_labelled_and_owned(fake):
    long_node = "gpu-h100-rack-17-slot-04.us-west-2.compute.internal.cluster-a.example.com"
    nodes = ["ip-10-0-1-5.us-west-2.compute.internal", long_node]
    fake.on_job_create = drive(dict.fromkeys(nodes, "Complete"), after=0)
    report = run(fake, nodes)
    assert report.ok, report.summary()
    jobs = {node_of(j): j for j in created_jobs(fake)}
    assert set(jobs) == set(nodes)
    for node, job in jobs.items():
        meta = job["metadata"]
        assert meta["name"] == job_name("dynamo-mount-cleanup", node)
        assert len(meta["name"]) <= 63 and DNS_LABEL.match(meta["name"])
        assert meta["namespace"] == NS
        assert meta["labels"] == {**CLEANUP_LABELS, NODE_LABEL: node_label(node)}
        assert LABEL_VALUE.match(meta["labels"][NODE_LABEL]) and len(meta["labels"][NODE_LABEL]) <= 63
        assert meta["annotations"] == {NODE_ANNOTATION: node}
        assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": OWNER["name"],
                                            "uid": OWNER["uid"], "controller": False, "blockOwnerDeletion": False}]
        template = job["spec"]["template"]
        assert template["spec"]["nodeName"] == node
        assert template["metadata"]["labels"] == {**CLEANUP_LABELS, NODE_LABEL: node_label(node)}
        assert template["spec"]["containers"] == TEMPLATE["spec"]["template"]["spec"]["containers"]
        assert job["spec"]["backoffLimit"] == 0
    assert node_label(long_node) != long_node
    assert TEMPLATE["metadata"]["name"] == "dynamo-mount-cleanup"  # the template is left as it was
    # without an owner, no ownerReferences
    fake.requests.clear()
    assert run(fake, ["node-a"], owner=None, deadline=0.2).findings[0].reason == "not-run"
    assert "ownerReferences" not in created_jobs(fake)[0]["metadata"]


def test_a_job_of_an_earlier_try_is_replaced(fake):
    name = "dynamo-mount-cleanup-node-a"
    old = fake.add_job({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
                        "spec": TEMPLATE["spec"], "status": {"active": 1}})
    fake.add_pod(pod(NS, f"{name}-old00", "node-a", CLEANUP_LABELS,
                     owner={"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": old["metadata"]["uid"],
                            "controller": True, "blockOwnerDeletion": True}))
    uids = []
    fake.on_job_create = lambda fake, job: (uids.append(job["metadata"]["uid"]),
                                            fake.set_job_condition(NS, name, "Complete", after=0.1))
    logs = []
    report = run(fake, ["node-a"], logs=logs)
    assert report.ok and report.findings[0].reason == "ok"
    methods = [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.requests if "/jobs" in r.path]
    assert methods[:3] == [("POST", "jobs"), ("DELETE", name), ("POST", "jobs")]
    assert fake.requests_to("DELETE", f"/jobs/{name}")[0].body["propagationPolicy"] == "Background"
    assert uids and uids[0] != old["metadata"]["uid"]
    assert fake.get("pods", NS, f"{name}-old00") is None
    assert f"cleanup node-a: deleting Job {NS}/{name} of an earlier try" in logs


@pytest.mark.parametrize("resource, verb", [("jobs", "create"), ("pods", "list"), ("jobs", "get")])
def test_forbidden_is_an_error_on_every_node(fake, resource, verb):
    fake.forbid(NS, resource, verb)
    started = time.monotonic()
    report = run(fake, ["node-a", "node-b", "node-c"], deadline=LONG_TIMEOUT)
    assert time.monotonic() - started < LONG_TIMEOUT / 2  # a 403 is final: not retried until the deadline
    assert not report.ok
    for finding in report.findings:
        assert (finding.status, finding.reason) == ("error", "forbidden")
        assert finding.message.startswith(f"forbidden: cannot {verb} {resource} in namespace {NS} (ServiceAccount "
                                          f"baseten/dynamo-hooks needs a Role there granting {verb} on {resource})")
    if verb == "get":  # created, then its outcome unknown: deleted, so it cannot start later
        assert len(fake.requests_to("DELETE", "/jobs/")) == 3 and fake.objects["jobs"] == {}


def test_an_unreachable_api_is_an_error_for_each_node_and_returns(fake):
    started = time.monotonic()
    report = run(fake, ["node-a", "node-b"], pods_wait=0.3, deadline=LONG_TIMEOUT, api=api_client_for(dead_url()))
    assert time.monotonic() - started < LONG_TIMEOUT / 2
    assert [(f.status, f.reason) for f in report.findings] == [("error", "unreachable")] * 2
    assert report.findings[0].message.startswith("unreachable: cannot connect to the Kubernetes API at ")


def write_template(tmp_path, template=TEMPLATE):
    path = tmp_path / "cleanup-job.yaml"
    path.write_text(yaml.safe_dump(template))
    return str(path)


def test_cli_end_to_end(monkeypatch, tmp_path, capsys):
    path = write_template(tmp_path)
    with fake_api(monkeypatch, tmp_path) as api:
        api.on_job_create = drive({"node-a": "Complete", "node-b": "Complete", "node-c": "Failed"}, after=0)
        argv = ["cleanup-nodes", f"--job-template={path}", f"--worker-selector={WORKERS}", "--namespace", NS,
                f"--owner-pod-name={OWNER['name']}", f"--owner-pod-uid={OWNER['uid']}", "--pods-wait=0.5",
                "--deadline=3", "--timeout=2"]
        assert cli.main([*argv, "--nodes=node-a,node-b"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[-1] == "cleanup: ok (node-a, node-b)"
        assert f"cleanup node-a: created Job {NS}/dynamo-mount-cleanup-node-a" in out
        assert created_jobs(api)[0]["metadata"]["ownerReferences"][0]["uid"] == OWNER["uid"]

        assert cli.main([*argv, "--nodes=node-a,node-c", "--json"]) == 1
        captured = capsys.readouterr()
        result = json.loads(captured.out)
        assert result["ok"] is False
        assert [(f["peer"], f["reason"]) for f in result["checks"][0]["findings"]] == [("node-a", "ok"),
                                                                                     ("node-c", "failed")]
        assert captured.err.splitlines()[-1].startswith(f"cleanup node-c: the cleanup Job {NS}/dynamo-mount-"
                                                        "cleanup-node-c failed on node node-c")

        monkeypatch.setenv("POD_NAMESPACE", "other")  # the default namespace
        assert cli.main([*argv[:3], "--nodes=node-a", "--deadline=0.2", "--timeout=2"]) == 0
        assert "warning: cleanup node-a: node node-a did not run the cleanup Job other/" in capsys.readouterr().out


def test_cli_nothing_to_clean_and_bad_arguments(tmp_path, capsys):
    path = write_template(tmp_path)
    common = [f"--job-template={path}", f"--worker-selector={WORKERS}", "--namespace", NS]
    assert cli.main(["cleanup-nodes", "--nodes=", *common]) == 0
    assert capsys.readouterr().out.strip() == "cleanup: ok (no node to clean up)"
    assert cli.main(["cleanup-nodes", "--nodes= , ", *common, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    assert cli.main(["cleanup-nodes", "--nodes=node-a", f"--job-template={bad}", f"--worker-selector={WORKERS}",
                     "--namespace", NS]) == 2
    assert "not a batch/v1 Job" in capsys.readouterr().err
    assert cli.main(["cleanup-nodes", "--nodes=node-a", f"--job-template={tmp_path / 'missing.yaml'}",
                     f"--worker-selector={WORKERS}", "--namespace", NS]) == 2
    assert "cannot read the Job template" in capsys.readouterr().err
    assert cli.main(["cleanup-nodes", "--nodes=node-a", *common, "--owner-pod-name=x"]) == 2
    assert "--owner-pod-name and --owner-pod-uid go together" in capsys.readouterr().err
