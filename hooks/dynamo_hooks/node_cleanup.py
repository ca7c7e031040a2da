"""After `helm uninstall`: detach the dead 3FS FUSE mount on every worker node, from one coordinator.

Helm runs post-delete hooks one at a time, waits for each and stops at the first that fails, and a Job
pinned to a node that is down never finishes. So the chart runs one unprivileged coordinator hook, which
calls cleanup_nodes: for every node at once (a thread each) it waits, bounded, until the release's worker
pods have left the node, creates a privileged cleanup Job pinned to the node (spec.template.spec.nodeName:
no scheduler, so a cordoned node still runs it) and polls that Job until it completes, fails, or a
deadline passes. One node's trouble never holds up or stops another's cleanup.

Outcome per node (Finding.reason, status):
- ok (ok): the Job completed.
- workers-remain (warning): the Job completed, but worker pods were still on the node after the wait;
  their mounts were detached lazily all the same.
- not-run (warning): the node did not run the Job to completion before the deadline (down, NotReady, its
  image could not be pulled); the Job is deleted, and the node's mounts are healed when a worker next
  starts there.
- job-exists (warning): a Job of the same name, from an earlier try, was still being deleted at the
  deadline; nothing ran.
- failed (error): the Job ran and failed: the node's mounts could not be detached.
- forbidden, timeout, unreachable, api-error, not-found (error): a Kubernetes API call failed (see
  dynamo_hooks.kube); unexpected (error): anything else went wrong.

The report passes when no node has an error: a node that cannot be reached does not fail the uninstall,
a cleanup that ran and failed does.

What is left behind: a Job that completed is deleted at once, and so is one that did not run or whose
outcome is unknown (an API error) -- a pending Job left behind would start when its node comes back,
perhaps after a new release has mounted 3FS there again. A failed Job's pod log is printed in the
coordinator's (which Helm shows when the hook fails); the Job is finished, so it never runs again, and
the garbage collector removes it with the coordinator's Pod, its owner (ownerReferences, with
blockOwnerDeletion false: setting it needs no permission on the Pod).
Deletions use Background propagation, so a Job's pods go with it (batch/v1 Jobs orphan them by default).

RBAC of the coordinator, in the release namespace: jobs (batch) create, get, delete; pods list;
pods/log get."""

import copy
import dataclasses
import hashlib
import re
import threading
import time

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from dynamo_hooks.kube import FORBIDDEN, JSON_HEADERS, NOT_FOUND, KubeError, api_errors
from dynamo_hooks.report import ERROR, OK, WARNING, Finding, Report

CHECK = "cleanup"
NAME_MAX = 63  # a Job's name is also the value of its pods' job-name label
NODE_LABEL = "dynamo-offloading/node"
NODE_ANNOTATION = "dynamo-offloading/node-name"
BACKGROUND = "Background"

REASON_OK, WORKERS_REMAIN, NOT_RUN, JOB_EXISTS, FAILED, UNEXPECTED = (
    "ok", "workers-remain", "not-run", "job-exists", "failed", "unexpected")
FINISHED_PHASES = ("Succeeded", "Failed")
LOG_LINES = 20  # of a failed cleanup pod's log, printed in the coordinator's

_UNSAFE = re.compile(r"[^a-z0-9-]+")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _digest(node):
    return hashlib.sha256(node.encode()).hexdigest()[:8]


def _safe(node):
    """`node` as a DNS-1123 label: lower case, each run of other characters than [a-z0-9-] one "-"."""
    return _UNSAFE.sub("-", node.lower()).strip("-")


def job_name(base, node):
    """The name of node `node`'s Job: `<base>-<node>` when the node's name is a DNS-1123 label (no dots)
    and the whole fits in 63 characters; else `<base>-<node, dots and the like as "-">` cut to 54
    characters, then "-" and the first 8 hex digits of the SHA-256 of the node's name. So two nodes never
    share a name, and the same node always gets the same one."""
    safe = _safe(node)
    name = f"{base}-{safe}" if safe else base
    if safe == node and len(name) <= NAME_MAX:
        return name
    return f"{name[:NAME_MAX - 9].rstrip('-.')}-{_digest(node)}"


def node_label(node):
    """The node as a label value: its name when it fits in 63 characters, else a cut form and a digest
    (the full name is in the annotation dynamo-offloading/node-name)."""
    if len(node) <= NAME_MAX and _LABEL_VALUE.match(node):
        return node
    safe = _safe(node)
    return f"{safe[:NAME_MAX - 9].rstrip('-')}-{_digest(node)}" if safe else _digest(node)


def pod_owner(name, uid):
    """The ownerReferences entry naming the coordinator's Pod."""
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "controller": False,
            "blockOwnerDeletion": False}


def check_template(template):
    """Raise ValueError unless `template` is a Job manifest with a metadata.name (the base of the names)."""
    if not isinstance(template, dict):
        raise ValueError("the Job template is not a mapping")
    if template.get("kind", "Job") != "Job" or template.get("apiVersion", "batch/v1") != "batch/v1":
        raise ValueError(f"the Job template is a {template.get('apiVersion')} {template.get('kind')}, "
                         "not a batch/v1 Job")
    if not isinstance(template.get("metadata"), dict) or not template["metadata"].get("name"):
        raise ValueError("the Job template has no metadata.name")
    if not isinstance(template.get("spec"), dict) or not isinstance(template["spec"].get("template"), dict):
        raise ValueError("the Job template has no spec.template")
    client.V1Job.from_dict(job_manifest(template, "default", "node"))  # ValueError when it is no Job


def load_template(path):
    """The Job template in YAML file `path`; ValueError when it cannot be read or is no Job."""
    try:
        with open(path) as f:
            template = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read the Job template {path}: {err}") from err
    check_template(template)
    return template


def job_manifest(template, namespace, node, owner=None):
    """The Job of node `node`: `template` named job_name(), pinned to the node, labelled with the node
    (node_label(), on the Job and its pods) and owned by `owner` when given."""
    job = copy.deepcopy(template)
    job.pop("status", None)
    job.update(apiVersion="batch/v1", kind="Job")
    meta = job["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "generateName", "managedFields", "selfLink",
                "deletionTimestamp", "ownerReferences"):
        meta.pop(key, None)
    meta.update(name=job_name(meta["name"], node), namespace=namespace)
    meta["labels"] = {**(meta.get("labels") or {}), NODE_LABEL: node_label(node)}
    meta["annotations"] = {**(meta.get("annotations") or {}), NODE_ANNOTATION: node}
    if owner:
        meta["ownerReferences"] = [dict(owner)]
    pod_template = job.setdefault("spec", {}).setdefault("template", {})
    pod_meta = pod_template.setdefault("metadata", {}) or {}
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), NODE_LABEL: node_label(node)}
    pod_template["metadata"] = pod_meta
    pod_template["spec"] = {**(pod_template.get("spec") or {}), "nodeName": node}
    return job


@dataclasses.dataclass
class _Plan:
    api: object
    namespace: str
    template: dict
    worker_selector: str
    owner: dict | None
    pods_wait: float
    deadline: float
    timeout: float
    poll: float
    log: object

    def context(self, node, verb, resource, name=None, kind=None):
        return dict(peer=node, verb=verb, resource=resource, namespace=self.namespace, name=name, kind=kind,
                    api=self.api, timeout=self.timeout)

    def sleep_until(self, end):
        """Sleep one poll interval, or until `end`; False when `end` has passed already."""
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(self.poll, left))
        return True


def cleanup_nodes(api, namespace, nodes, job_template, worker_selector, owner, pods_wait_seconds, deadline_seconds,
                  timeout, poll=2.0, log=print):
    """Run the cleanup Job on each of `nodes` (see the module's doc) and return Report("cleanup"), a
    finding per node in the order given. `api` is a kubernetes ApiClient, each API call bounded by
    `timeout` seconds; `job_template` a batch/v1 Job manifest whose metadata.name is the base of the Jobs'
    names; `worker_selector` a label selector of the release's worker pods; `owner` an ownerReferences
    entry (pod_owner()) or None. A node's worker pods are waited for up to `pods_wait_seconds`, then its Job
    up to `deadline_seconds`, polling every `poll` seconds: the call returns within pods_wait_seconds +
    deadline_seconds + about 6 timeouts. Never raises for a node; ValueError when the template is no Job.
    No nodes: a report without findings (which does not pass: the caller says there was nothing to do)."""
    check_template(job_template)
    plan = _Plan(api, namespace, job_template, worker_selector, owner, max(0.0, pods_wait_seconds),
                 max(0.0, deadline_seconds), timeout, max(0.01, poll), log)
    nodes = list(dict.fromkeys(nodes))
    results = {}

    def run(node):
        try:
            results[node] = _clean_node(plan, node)
        except Exception as err:  # a node's thread never raises: its failure is its finding
            results[node] = Finding(node, ERROR, UNEXPECTED, f"unexpected {type(err).__name__}: {err}",
                                    {"job": f"{namespace}/{job_name(job_template['metadata']['name'], node)}"})

    threads = [threading.Thread(target=run, args=(node,), name=f"cleanup-{node}", daemon=True) for node in nodes]
    for thread in threads:
        thread.start()
    end = time.monotonic() + plan.pods_wait + plan.deadline + 8 * timeout + 2 * plan.poll + 1
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    findings = []
    for node in nodes:
        finding = results.get(node)
        if finding is None:  # not reached while each API call honours its timeout
            finding = Finding(node, ERROR, "timeout", f"the cleanup of node {node} did not end in time")
        findings.append(finding)
    return Report(check=CHECK, findings=findings, need="all")


def _clean_node(plan, node):
    name = job_name(plan.template["metadata"]["name"], node)
    job_ref = f"{plan.namespace}/{name}"
    details = {"job": job_ref}
    try:
        workers = _wait_for_workers(plan, node)
    except KubeError as err:
        return Finding(node, ERROR, err.reason, err.message, details)
    if workers:
        details["workers"] = workers
        plan.log(f"cleanup {node}: worker pods still there after {plan.pods_wait:g} s, cleaning up anyway: "
                 f"{', '.join(workers)}")

    end = time.monotonic() + plan.deadline
    try:
        created = _create_job(plan, node, job_manifest(plan.template, plan.namespace, node, plan.owner), end)
    except KubeError as err:
        return Finding(node, ERROR, err.reason, err.message, details)
    if not created:
        return Finding(node, WARNING, JOB_EXISTS,
                       f"Job {job_ref} from an earlier try was still being deleted after {plan.deadline:g} s; "
                       f"node {node} was not cleaned up, its 3FS mounts will be healed when a worker next "
                       f"starts there", details)
    plan.log(f"cleanup {node}: created Job {job_ref}")

    try:
        condition = _wait_for_job(plan, node, name, end)
    except KubeError as err:
        _delete_job_quietly(plan, node, name)
        return Finding(node, ERROR, err.reason, err.message, details)

    if condition is None:
        state = _pod_state(plan, node, name)
        details["pod"] = state
        deleted = _delete_job_quietly(plan, node, name)
        gone = "the Job was deleted" if deleted is None else f"the Job could not be deleted ({deleted})"
        if deleted is not None:
            details["delete_error"] = deleted
        return Finding(node, WARNING, NOT_RUN,
                       f"node {node} did not run the cleanup Job {job_ref} to completion within "
                       f"{plan.deadline:g} s ({state}; the node is down or NotReady, or the image cannot be "
                       f"pulled); {gone}; the node's 3FS mounts will be healed when a worker next starts there",
                       details)

    details["condition"] = {"type": condition.type, "reason": condition.reason, "message": condition.message}
    if condition.type == "Failed":
        why = "; ".join(filter(None, (condition.reason, condition.message)))
        # Printed here: the Job goes with this pod, and Helm shows this pod's log when it fails.
        details["log"] = _pod_log_tail(plan, node, name)
        plan.log(f"cleanup {node}: Job {job_ref} failed; its log ends:\n" + details["log"].rstrip())
        return Finding(node, ERROR, FAILED,
                       f"the cleanup Job {job_ref} failed on node {node}{f' ({why})' if why else ''}: its 3FS "
                       f"mounts may still be attached (its log is above)", details)

    deleted = _delete_job_quietly(plan, node, name)
    if deleted is not None:
        details["delete_error"] = deleted
        plan.log(f"cleanup {node}: could not delete the completed Job {job_ref}: {deleted}")
    if workers:
        return Finding(node, WARNING, WORKERS_REMAIN,
                       f"cleanup Job {job_ref} completed on node {node}, but worker pods were still there after "
                       f"{plan.pods_wait:g} s ({', '.join(workers)}); their mounts were detached lazily", details)
    plan.log(f"cleanup {node}: Job {job_ref} completed")
    return Finding(node, OK, REASON_OK, f"cleanup Job {job_ref} completed on node {node}", details)


def _retrying(plan, end, attempt):
    """Call `attempt()` until it returns something other than None, or `end` passes (then None). A KubeError
    forbidden or not-found is raised at once; others (timeout, unreachable, api-error) are tried again until
    `end`, the last one raised when the last try failed."""
    while True:
        try:
            result = attempt()
        except KubeError as err:
            if err.reason in (FORBIDDEN, NOT_FOUND):
                raise
            if not plan.sleep_until(end):
                raise
            continue
        if result is not None or not plan.sleep_until(end):
            return result


def _wait_for_workers(plan, node):
    """The worker pods still on `node` (not Succeeded or Failed) when they are gone or the wait is over."""
    core = client.CoreV1Api(plan.api)
    remaining = []
    told = False

    def attempt():
        nonlocal remaining, told
        with api_errors(**plan.context(node, "list", "pods")):
            pods = core.list_namespaced_pod(plan.namespace, label_selector=plan.worker_selector,
                                            field_selector=f"spec.nodeName={node}",
                                            _request_timeout=plan.timeout).items or []
        remaining = sorted(p.metadata.name for p in pods if (p.status and p.status.phase) not in FINISHED_PHASES)
        if remaining and not told:
            told = True
            plan.log(f"cleanup {node}: waiting up to {plan.pods_wait:g} s for {len(remaining)} worker pod(s) to "
                     f"leave: {', '.join(remaining)}")
        return [] if not remaining else None

    found = _retrying(plan, time.monotonic() + plan.pods_wait, attempt)
    return remaining if found is None else found


def _create_job(plan, node, job, end):
    """Create the Job; one of the same name (an earlier try) is deleted first. False when it is still there
    at `end`."""
    batch = client.BatchV1Api(plan.api)
    name = job["metadata"]["name"]
    body = client.V1Job.from_dict(job)
    replaced = False
    while True:
        with api_errors(**plan.context(node, "create", "jobs", name, "Job")):
            try:
                batch.create_namespaced_job(plan.namespace, body, _headers=dict(JSON_HEADERS),
                                            _request_timeout=plan.timeout)
                return True
            except ApiException as err:
                if err.status != 409:  # 409 AlreadyExists: an earlier try's
                    raise
        if replaced and not plan.sleep_until(end):
            return False
        if not replaced:
            plan.log(f"cleanup {node}: deleting Job {plan.namespace}/{name} of an earlier try")
        _delete_job(plan, node, name)
        replaced = True


def _terminal_condition(job):
    for condition in (job.status and job.status.conditions) or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return condition
    return None


def _wait_for_job(plan, node, name, end):
    """The Job's Complete or Failed condition once it is true, or None when `end` passes first."""
    batch = client.BatchV1Api(plan.api)

    def attempt():
        with api_errors(**plan.context(node, "get", "jobs", name, "Job")):
            job = batch.read_namespaced_job(name, plan.namespace, _request_timeout=plan.timeout)
        return _terminal_condition(job)

    return _retrying(plan, end, attempt)


def _delete_job(plan, node, name):
    """Delete the Job and, in the background, its pods; a Job already gone is fine."""
    with api_errors(**plan.context(node, "delete", "jobs", name, "Job")):
        try:
            client.BatchV1Api(plan.api).delete_namespaced_job(
                name, plan.namespace, body=client.V1DeleteOptions(propagation_policy=BACKGROUND),
                _request_timeout=plan.timeout)
        except ApiException as err:
            if err.status != 404:
                raise


def _delete_job_quietly(plan, node, name):
    """_delete_job; None when done, else the error's message."""
    try:
        _delete_job(plan, node, name)
    except KubeError as err:
        return err.message
    return None


def _pod_log_tail(plan, node, name):
    """The last lines the Job's pod printed (best effort: else why they could not be read)."""
    core = client.CoreV1Api(plan.api)
    try:
        with api_errors(**plan.context(node, "list", "pods")):
            pods = core.list_namespaced_pod(plan.namespace, label_selector=f"job-name={name}",
                                            _request_timeout=plan.timeout).items or []
        if not pods:
            return "(no pod was created for it)"
        with api_errors(**plan.context(node, "get", "pods/log")):
            return core.read_namespaced_pod_log(pods[-1].metadata.name, plan.namespace, tail_lines=LOG_LINES,
                                                _request_timeout=plan.timeout) or "(empty)"
    except KubeError as err:
        return f"(its log could not be read: {err.message})"


def _pod_state(plan, node, name):
    """What the Job's pod is doing, in a few words (best effort: the reason it could not be found else)."""
    try:
        with api_errors(**plan.context(node, "list", "pods")):
            pods = client.CoreV1Api(plan.api).list_namespaced_pod(
                plan.namespace, label_selector=f"job-name={name}", _request_timeout=plan.timeout).items or []
    except KubeError as err:
        return f"its pod is unknown: {err.message}"
    if not pods:
        return "no pod was created for it"
    pod = pods[0]
    status = pod.status or client.V1PodStatus()
    why = [s.state.waiting.reason for s in (status.init_container_statuses or []) + (status.container_statuses or [])
           if s.state and s.state.waiting and s.state.waiting.reason]
    if not why:
        why = [f"{c.type} {c.reason}" for c in status.conditions or [] if c.status == "False" and c.reason]
    if pod.metadata.deletion_timestamp:
        why.append("terminating")
    because = f" ({', '.join(why)})" if why else ""
    return f"its pod {pod.metadata.name} is {status.phase or 'Pending'}{because}"
