"""A FAKE Kubernetes API server for tests: plain http.server in a thread on 127.0.0.1, no kube-apiserver.

It serves the JSON shapes a real apiserver sends for the few resources the hooks use, so the real
kubernetes Python client can be pointed at it:

- Services: GET one, GET the list of a namespace.
- EndpointSlices (discovery.k8s.io/v1): GET the list of a namespace, filtered by an equality
  labelSelector (e.g. kubernetes.io/service-name=etcd-headless), GET one.
- ConfigMaps: GET (one, list), POST (create; 409 AlreadyExists), PUT (replace; 409 Conflict on a stale
  resourceVersion), PATCH with application/merge-patch+json or application/strategic-merge-patch+json
  (both applied as an RFC 7386 JSON merge patch; others get 415), DELETE.
- Pods: GET (one, list), DELETE. Tests add them with `pod(...)`; a pod leaves at once (no grace period).
- Jobs (batch/v1): as ConfigMaps. Creating a Job also creates its Pod, as the Job controller would
  (Pending, on the template's nodeName, labelled job-name and controller-uid, owned by the Job); nothing
  runs it: a test drives the Job with `set_job_condition` (at once or after a delay), from
  `on_job_create` if it likes.

Lists take an equality labelSelector and fieldSelector (e.g. spec.nodeName=node-a on pods; the fields a
real apiserver supports for the resource, else 400). DELETE honours propagationPolicy (body or query):
Background and Foreground delete the dependents (objects whose ownerReferences name the deleted uid)
with the object, Orphan leaves them; without one, a Job orphans its pods as a real apiserver does for
batch/v1 Jobs, anything else deletes them.

Errors are `Status` objects with the reason, code and message shapes of a real apiserver (404 NotFound,
403 Forbidden for namespaces or resources made forbidden, 409 AlreadyExists/Conflict, 400 BadRequest).
Every request is recorded (method, path, query, content type, parsed body) for tests to assert on, and
an optional delay holds requests back to make a client time out.

Use it as a context manager or call start()/stop():

    with FakeKubeApi() as fake:
        fake.add_service(service("baseten", "etcd-headless"))
        fake.add_endpoint_slice(endpoint_slice("baseten", "etcd-headless", [endpoint("10.0.0.5")]))
        api = fake.api_client()
"""

import copy
import dataclasses
import datetime
import http.server
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid

from kubernetes import client

SERVICE_ACCOUNT_USER = "system:serviceaccount:baseten:dynamo-hooks"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# resource -> (API group, kind, list path prefix before /namespaces/)
RESOURCES = {
    "services": ("", "Service", "/api/v1"),
    "configmaps": ("", "ConfigMap", "/api/v1"),
    "endpointslices": ("discovery.k8s.io", "EndpointSlice", "/apis/discovery.k8s.io/v1"),
    "pods": ("", "Pod", "/api/v1"),
    "jobs": ("batch", "Job", "/apis/batch/v1"),
}
API_VERSIONS = {"": "v1", "discovery.k8s.io": "discovery.k8s.io/v1", "batch": "batch/v1"}
# resource -> the fields its fieldSelector may name (every resource takes metadata.name and metadata.namespace)
FIELD_SELECTORS = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
    "jobs": {"status.successful"},
}
READ_ONLY = {"services": ("get", "list"), "endpointslices": ("get", "list"), "pods": ("get", "list", "delete")}
MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


@dataclasses.dataclass
class Request:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict  # name -> first value
    content_type: str
    body: object  # parsed JSON, or None


class ApiError(Exception):
    def __init__(self, status):
        super().__init__(status["message"])
        self.status = status


def status(code, reason, message, details=None):
    """A `Status` object as an apiserver sends it with an error."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details is not None:
        body["details"] = details
    return body


def _qualified(resource):
    group = RESOURCES[resource][0]
    return f"{resource}.{group}" if group else resource


def not_found(resource, name):
    return status(404, "NotFound", f'{_qualified(resource)} "{name}" not found',
                  {"name": name, **_group(resource), "kind": resource})


def already_exists(resource, name):
    return status(409, "AlreadyExists", f'{_qualified(resource)} "{name}" already exists',
                  {"name": name, **_group(resource), "kind": resource})


def conflict(resource, name):
    return status(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": the object '
                                   "has been modified; please apply your changes to the latest version and try again",
                  {"name": name, **_group(resource), "kind": resource})


def forbidden(resource, verb, namespace, name=None, user=SERVICE_ACCOUNT_USER):
    group = RESOURCES[resource][0]
    what = f'{_qualified(resource)} "{name}"' if name else _qualified(resource)
    message = (f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{group}" '
               f'in the namespace "{namespace}"')
    details = {**({"name": name} if name else {}), **_group(resource), "kind": resource}
    return status(403, "Forbidden", message, details)


def _group(resource):
    group = RESOURCES[resource][0]
    return {"group": group} if group else {}


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def parse_label_selector(text):
    """Equality terms only (a=b, a==b, a!=b), comma-separated: [(key, op, value)]; ValueError otherwise."""
    terms = []
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        for op in ("!=", "==", "="):
            key, sep, value = term.partition(op)
            if sep:
                terms.append((key.strip(), "!=" if op == "!=" else "=", value.strip()))
                break
        else:
            raise ValueError(f"unable to parse requirement: {term!r} (this fake supports equality terms only)")
    return terms


def matches(labels, terms):
    labels = labels or {}
    return all((labels.get(k) == v) == (op == "=") for k, op, v in terms)


def parse_field_selector(resource, text):
    """The terms of a fieldSelector, as parse_label_selector; a field the resource does not support is a
    ValueError (a real apiserver answers 400 "field label not supported")."""
    terms = parse_label_selector(text)
    for field, _, _ in terms:
        if field not in FIELD_SELECTORS.get(resource, set()) | {"metadata.name", "metadata.namespace"}:
            raise ValueError(f'"{field}" is not a known field selector: only "metadata.name", '
                             f'"metadata.namespace" (this fake: field label not supported: {field})')
    return terms


def field_value(obj, path):
    """The value of a dotted field path as a field selector compares it: a string, "" when absent."""
    value = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def fields_match(obj, terms):
    return all((field_value(obj, f) == v) == (op == "=") for f, op, v in terms)


def _now():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubeApi:
    """The fake apiserver and its in-memory store. Thread-safe; state may be changed while it serves."""

    def __init__(self, user=SERVICE_ACCOUNT_USER):
        self.user = user
        self.objects = {name: {} for name in RESOURCES}  # resource -> {(namespace, name): object}
        self.forbidden = {}  # namespace -> set of (resource, verb) pairs, None meaning any
        self.requests = []
        self.pod_logs = {}  # (namespace, pod name) -> the text GET pods/<name>/log answers
        self.delay = 0.0
        self.delay_path = None  # only requests whose path contains this are delayed
        self.failure = None  # (HTTP code, reason) every request is answered with, as a sick apiserver would
        self.on_job_create = None  # called as on_job_create(fake, job) after a Job is created through the API
        self._versions = itertools.count(1000)
        self._lock = threading.RLock()  # reentrant: on_job_create may call the fake's methods
        self._timers = []
        self._server = None
        self._thread = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self):
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kube-api",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        for timer in self._timers:
            timer.cancel()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def api_client(self):
        """A kubernetes ApiClient pointed at this fake, configured like dynamo_hooks.kube.api_client()."""
        return api_client_for(self.url)

    # -- store -------------------------------------------------------------------------------------

    def add(self, resource, obj):
        """Store `obj` (a dict with metadata.namespace and metadata.name), filling in what a server sets."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        with self._lock:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = str(next(self._versions))
            self.objects[resource][(meta["namespace"], meta["name"])] = obj
        return obj

    def add_service(self, obj):
        return self.add("services", obj)

    def add_endpoint_slice(self, obj):
        return self.add("endpointslices", obj)

    def add_config_map(self, obj):
        return self.add("configmaps", obj)

    def add_pod(self, obj):
        return self.add("pods", obj)

    def add_job(self, obj):
        return self.add("jobs", obj)

    def delete(self, resource, namespace, name, propagation="Background"):
        """Delete a stored object (and its dependents, unless `propagation` is Orphan); False when absent."""
        with self._lock:
            if (namespace, name) not in self.objects[resource]:
                return False
            self._remove(resource, namespace, name, propagation)
            return True

    def job_pods(self, namespace, job_name):
        """The pods the fake made for Job `job_name`, as stored."""
        with self._lock:
            return [copy.deepcopy(o) for (ns, _), o in sorted(self.objects["pods"].items())
                    if ns == namespace and (o["metadata"].get("labels") or {}).get("job-name") == job_name]

    def set_job_condition(self, namespace, name, condition, status="True", reason=None, message=None, after=0.0):
        """Finish Job `namespace`/`name` as the Job controller would: `condition` "Complete" (after
        SuccessCriteriaMet) or "Failed" (after FailureTarget), or any other condition type as given. Its
        pods' phase follows (Succeeded / Failed). With `after` seconds, done later from a timer thread;
        a Job gone by then is left alone. Returns the Job, or None when there is none (or the timer)."""
        if after:
            timer = threading.Timer(after, self.set_job_condition,
                                    args=(namespace, name, condition, status, reason, message))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
            return timer
        with self._lock:
            job = self.objects["jobs"].get((namespace, name))
            if job is None:
                return None
            now = _now()
            job_status = job.setdefault("status", {})
            conditions = job_status.setdefault("conditions", [])
            reason = reason or {"Complete": "CompletionsReached", "Failed": "BackoffLimitExceeded"}.get(condition, "")
            message = message or {"Complete": "Reached expected number of succeeded pods",
                                  "Failed": "Job has reached the specified backoff limit"}.get(condition, "")
            first = {"Complete": "SuccessCriteriaMet", "Failed": "FailureTarget"}.get(condition) if status == "True" \
                else None
            for kind in filter(None, (first, condition)):
                conditions.append({"type": kind, "status": status, "reason": reason, "message": message,
                                   "lastProbeTime": now, "lastTransitionTime": now})
            if first:
                job_status.pop("active", None)
                job_status["ready"] = 0
                job_status["succeeded" if condition == "Complete" else "failed"] = 1
                if condition == "Complete":
                    job_status["completionTime"] = now
                phase = "Succeeded" if condition == "Complete" else "Failed"
                uid = job["metadata"]["uid"]
                for stored in self.objects["pods"].values():
                    if any(r.get("uid") == uid for r in stored["metadata"].get("ownerReferences") or ()):
                        stored.setdefault("status", {})["phase"] = phase
                        stored["metadata"]["resourceVersion"] = str(next(self._versions))
            job["metadata"]["resourceVersion"] = str(next(self._versions))
            return copy.deepcopy(job)

    def get(self, resource, namespace, name):
        """A copy of the stored object, or None."""
        with self._lock:
            obj = self.objects[resource].get((namespace, name))
            return copy.deepcopy(obj)

    def forbid(self, namespace, resource=None, verb=None):
        """Answer 403 Forbidden to `verb` on `resource` in `namespace` (None: every resource / verb)."""
        with self._lock:
            self.forbidden.setdefault(namespace, set()).add((resource, verb))

    def set_delay(self, seconds, path_contains=None):
        """Hold every request (or those whose path contains `path_contains`) back `seconds` before answering."""
        self.delay, self.delay_path = seconds, path_contains

    def fail_with(self, code, reason="InternalError"):
        """Answer every request with this error status: what a real apiserver cannot easily be made to do."""
        self.failure = (code, reason)

    def requests_to(self, method=None, path_contains=""):
        return [r for r in list(self.requests)
                if (method is None or r.method == method) and path_contains in r.path]

    # -- request handling --------------------------------------------------------------------------

    def _is_forbidden(self, namespace, resource, verb):
        rules = self.forbidden.get(namespace, ())
        return any(r in (None, resource) and v in (None, verb) for r, v in rules)

    def handle(self, method, path, query, content_type, body):
        """(HTTP code, JSON object) for one request."""
        route = _route(path)
        if route is None:
            return 404, status(404, "NotFound", "the server could not find the requested resource", {})
        resource, namespace, name = route
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(method)
        if verb is None:
            return 405, status(405, "MethodNotAllowed", f"the server does not allow this method on {resource}")
        if (verb in ("create",) and name) or (verb not in ("list", "create") and not name):
            return 405, status(405, "MethodNotAllowed", f"the server does not allow this method on {resource}")
        if resource in READ_ONLY and verb not in READ_ONLY[resource]:
            return 405, status(405, "MethodNotAllowed", f"this fake serves only {', '.join(READ_ONLY[resource])} "
                                                        f"on {resource}")
        with self._lock:
            if self._is_forbidden(namespace, resource, verb):
                return 403, forbidden(resource, verb, namespace, name, self.user)
            try:
                return getattr(self, f"_{verb}")(resource, namespace, name, query, content_type, body)
            except ApiError as err:
                return err.status["code"], err.status

    def _get(self, resource, namespace, name, query, content_type, body):
        obj = self.objects[resource].get((namespace, name))
        if obj is None:
            raise ApiError(not_found(resource, name))
        return 200, _with_type(resource, obj)

    def _list(self, resource, namespace, name, query, content_type, body):
        try:
            terms = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(resource, query.get("fieldSelector"))
        except ValueError as err:
            raise ApiError(status(400, "BadRequest", str(err))) from None
        items = [_with_type(resource, o) for (ns, _), o in sorted(self.objects[resource].items())
                 if ns == namespace and matches(o["metadata"].get("labels"), terms) and fields_match(o, fields)]
        for item in items:  # a real list omits kind/apiVersion on its items
            item.pop("kind", None)
            item.pop("apiVersion", None)
        group, kind, _ = RESOURCES[resource]
        return 200, {"kind": f"{kind}List", "apiVersion": API_VERSIONS[group],
                     "metadata": {"resourceVersion": str(next(self._versions))}, "items": items}

    def _check_body(self, resource, namespace, body):
        if not isinstance(body, dict):
            raise ApiError(status(400, "BadRequest", "the request body is not a JSON object"))
        meta = body.get("metadata") or {}
        if meta.get("namespace") not in (None, namespace):
            raise ApiError(status(400, "BadRequest", "the namespace of the provided object does not match the "
                                                     "namespace sent on the request"))

    def _create(self, resource, namespace, name, query, content_type, body):
        self._check_body(resource, namespace, body)
        name = (body.get("metadata") or {}).get("name")
        if not name:
            raise ApiError(status(422, "Invalid", f'{RESOURCES[resource][1]} "" is invalid: metadata.name: '
                                                  "Required value: name or generateName is required"))
        if (namespace, name) in self.objects[resource]:
            raise ApiError(already_exists(resource, name))
        obj = copy.deepcopy(body)
        obj["metadata"] = {**obj.get("metadata", {}), "namespace": namespace, "name": name,
                           "uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                           "resourceVersion": str(next(self._versions))}
        obj = _with_type(resource, obj)
        self.objects[resource][(namespace, name)] = obj
        if resource == "jobs":
            self._start_job(obj)
            if self.on_job_create:
                self.on_job_create(self, copy.deepcopy(obj))
        return 201, copy.deepcopy(self.objects[resource].get((namespace, name), obj))

    def _start_job(self, job):
        """What the Job controller does with a new Job: label it, and create its one Pod, Pending."""
        meta = job["metadata"]
        uid, name, namespace = meta["uid"], meta["name"], meta["namespace"]
        selector = {"batch.kubernetes.io/controller-uid": uid}
        job_labels = {"batch.kubernetes.io/job-name": name, "job-name": name, **selector, "controller-uid": uid}
        meta["labels"] = {**job_labels, **(meta.get("labels") or {})}
        spec = job.setdefault("spec", {})
        spec.setdefault("selector", {"matchLabels": selector})
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        job["status"] = {"active": 1, "ready": 0, "startTime": _now(), "uncountedTerminatedPods": {}}
        template = spec.get("template") or {}
        pod_name = f"{name}-{uuid.uuid4().hex[:5]}"
        self.objects["pods"][(namespace, pod_name)] = _with_type("pods", {
            "metadata": {"name": pod_name, "generateName": f"{name}-", "namespace": namespace,
                         "uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                         "resourceVersion": str(next(self._versions)),
                         "labels": {**((template.get("metadata") or {}).get("labels") or {}), **job_labels},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": copy.deepcopy(template.get("spec") or {}),
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        })

    def _update(self, resource, namespace, name, query, content_type, body):
        self._check_body(resource, namespace, body)
        current = self.objects[resource].get((namespace, name))
        if current is None:
            raise ApiError(not_found(resource, name))
        sent = (body.get("metadata") or {}).get("resourceVersion")
        if sent and sent != current["metadata"]["resourceVersion"]:
            raise ApiError(conflict(resource, name))
        return self._store(resource, namespace, name, current, copy.deepcopy(body))

    def _patch(self, resource, namespace, name, query, content_type, body):
        current = self.objects[resource].get((namespace, name))
        media_type = (content_type or "").split(";")[0].strip()
        if media_type not in MERGE_PATCH_TYPES:
            raise ApiError(status(415, "UnsupportedMediaType",
                                  f'the body of the request was in an unknown format - accepted media types '
                                  f'include: {", ".join(MERGE_PATCH_TYPES)} (this fake)'))
        if current is None:
            raise ApiError(not_found(resource, name))
        if not isinstance(body, dict):
            raise ApiError(status(400, "BadRequest", "the patch is not a JSON object"))
        return self._store(resource, namespace, name, current, merge_patch(current, body))

    def _store(self, resource, namespace, name, current, obj):
        meta = obj.setdefault("metadata", {})
        for key in ("uid", "creationTimestamp"):
            meta[key] = current["metadata"][key]
        meta.update(namespace=namespace, name=name, resourceVersion=str(next(self._versions)))
        obj = _with_type(resource, obj)
        self.objects[resource][(namespace, name)] = obj
        return 200, copy.deepcopy(obj)

    def _delete(self, resource, namespace, name, query, content_type, body):
        if (namespace, name) not in self.objects[resource]:
            raise ApiError(not_found(resource, name))
        options = body if isinstance(body, dict) else {}
        propagation = options.get("propagationPolicy") or query.get("propagationPolicy")
        orphan = options.get("orphanDependents", query.get("orphanDependents"))
        if propagation is None and orphan is not None:
            propagation = "Orphan" if str(orphan).lower() == "true" else "Background"
        if propagation not in (None, "Background", "Foreground", "Orphan"):
            raise ApiError(status(422, "Invalid", f"DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: "
                                                  f'Unsupported value: "{propagation}"'))
        if propagation is None:  # the default of batch/v1 Jobs is still orphanDependents
            propagation = "Orphan" if resource == "jobs" else "Background"
        obj = self._remove(resource, namespace, name, propagation)
        return 200, copy.deepcopy(obj)

    def _remove(self, resource, namespace, name, propagation):
        """Delete an object and, unless Orphan, its dependents (and theirs) in the namespace."""
        obj = self.objects[resource].pop((namespace, name))
        if propagation != "Orphan":
            uid = obj["metadata"]["uid"]
            for other, stored in self.objects.items():
                for (ns, other_name), dependent in list(stored.items()):
                    refs = dependent["metadata"].get("ownerReferences") or ()
                    if ns == namespace and any(r.get("uid") == uid for r in refs) \
                            and (ns, other_name) in stored:
                        self._remove(other, ns, other_name, propagation)
        return obj


def _with_type(resource, obj):
    group, kind, _ = RESOURCES[resource]
    return {"kind": kind, "apiVersion": API_VERSIONS[group], **copy.deepcopy(obj)}


def _route(path):
    """(resource, namespace, name or None) of a namespaced resource path, else None."""
    for resource, (_, _, prefix) in RESOURCES.items():
        if not path.startswith(prefix + "/namespaces/"):
            continue
        parts = path[len(prefix) + 1:].split("/")
        if len(parts) in (3, 4) and parts[2] == resource and all(parts):
            return resource, urllib.parse.unquote(parts[1]), urllib.parse.unquote(parts[3]) if len(parts) == 4 \
                else None
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    fake = None
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def _serve(self):
        fake = self.fake
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        fake.requests.append(Request(self.command, url.path, query, content_type, body))
        if fake.delay and (fake.delay_path is None or fake.delay_path in url.path):
            time.sleep(fake.delay)
        log = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", url.path)
        if log and self.command == "GET":
            return self._reply_log(*log.groups())
        if fake.failure:
            code, answer = fake.failure[0], status(fake.failure[0], fake.failure[1], "etcdserver: leader changed")
        elif isinstance(body, str):
            code, answer = 400, status(400, "BadRequest", "the request body is not valid JSON")
        else:
            code, answer = fake.handle(self.command, url.path, query, content_type, body)
        data = json.dumps(answer).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timed out)
            pass

    def _reply_log(self, namespace, name):
        """A pod's log (pods/log subresource) is plain text; the fake holds it in `pod_logs`."""
        text = self.fake.pod_logs.get((namespace, name))
        if text is None:
            code, data, kind = 404, json.dumps(not_found("pods", name)).encode(), "application/json"
        else:
            code, data, kind = 200, text.encode(), "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


def api_client_for(url):
    """A kubernetes ApiClient for `url`, with retries off as dynamo_hooks.kube configures it."""
    from dynamo_hooks.kube import configure

    configuration = client.Configuration(host=url)
    return client.ApiClient(configure(configuration))


# -- builders of realistic objects ------------------------------------------------------------------

def service(namespace, name, ports=(("client", 2379),), headless=True, publish_not_ready=False, selector=None):
    """A Service as the apiserver returns it; `ports` are (name, port) pairs."""
    spec = {
        "type": "ClusterIP",
        "clusterIP": "None" if headless else "10.96.12.34",
        "clusterIPs": ["None" if headless else "10.96.12.34"],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "selector": selector or {"app.kubernetes.io/name": name},
        "ports": [{"name": n, "protocol": "TCP", "port": p, "targetPort": p} for n, p in ports],
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
    }
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    return {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": name}},
            "spec": spec, "status": {"loadBalancer": {}}}


def endpoint(ip, ready=True, serving=True, terminating=False, pod=None, node="node-a", namespace="baseten",
             hostname=None):
    """One endpoint of an EndpointSlice. A condition given as None is left out, as a server does for nil."""
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
                  if v is not None}
    pod = pod or f"pod-{ip.replace('.', '-').replace(':', '-')}"
    result = {"addresses": [ip], "conditions": conditions,
              "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod, "uid": str(uuid.uuid4())},
              "nodeName": node, "zone": "zone-a"}
    if hostname:
        result["hostname"] = hostname
    return result


_slice_names = itertools.count(1)


def endpoint_slice(namespace, service_name, endpoints, ports=(("client", 2379),), address_type="IPv4", name=None,
                   headless=True):
    """An EndpointSlice of Service `service_name` as the EndpointSlice controller writes it; `ports` are
    (name, port) pairs. `endpoints` None gives the null a placeholder slice has."""
    labels = {SERVICE_NAME_LABEL: service_name,
              "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    if headless:
        labels["service.kubernetes.io/headless"] = ""
    for ep in endpoints or []:
        ep.get("targetRef", {})["namespace"] = namespace
    return {
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name or f"{service_name}-{next(_slice_names):05x}",
            "generateName": f"{service_name}-",
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service_name,
                                 "uid": str(uuid.uuid4()), "controller": True, "blockOwnerDeletion": True}],
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": n, "protocol": "TCP", "port": p} for n, p in ports] if ports is not None else None,
    }


def pod(namespace, name, node, labels, phase="Running", terminating=False, owner=None):
    """A Pod on `node` as the apiserver returns it; `terminating` gives it a deletionTimestamp (it still runs);
    `owner` is an ownerReferences entry."""
    meta = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if terminating:
        meta["deletionTimestamp"] = _now()
        meta["deletionGracePeriodSeconds"] = 30
    if owner:
        meta["ownerReferences"] = [owner]
    ready = "True" if phase == "Running" else "False"
    return {
        "kind": "Pod", "apiVersion": "v1", "metadata": meta,
        "spec": {"nodeName": node, "restartPolicy": "Always", "schedulerName": "default-scheduler",
                 "containers": [{"name": "main", "image": "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.0"}]},
        "status": {"phase": phase, "hostIP": "10.0.0.10", "podIP": "10.244.1.7", "qosClass": "BestEffort",
                   "conditions": [{"type": "Ready", "status": ready}]},
    }


def config_map(namespace, name, data, labels=None, annotations=None):
    meta = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta, "data": data}
