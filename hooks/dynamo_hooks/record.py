"""The ConfigMap in which the pre-install hook records the addresses it resolved, for the worker's pods.

The chart manages the same ConfigMap, so an existing one is merge-patched: only the keys written here
(and the given labels and annotations) are set, every other key is left as it is."""

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from dynamo_hooks.kube import JSON_HEADERS, api_errors

FIELD_MANAGER = "dynamo-hooks"
MERGE_PATCH = "application/merge-patch+json"


def _context(api, namespace, name, timeout, verb):
    return dict(peer=f"{namespace}/{name}", verb=verb, resource="configmaps", kind="ConfigMap", name=name,
                namespace=namespace, api=api, timeout=timeout)


def write_record(api, namespace, name, data, labels, annotations, timeout):
    """Create ConfigMap `namespace`/`name` holding `data` (str -> str), or, when it exists, merge-patch
    those keys and the labels/annotations into it. Returns "created" or "updated"; raises KubeError.
    `api` is a kubernetes ApiClient; each API call is bounded by `timeout` seconds."""
    core = client.CoreV1Api(api)
    data = {str(k): str(v) for k, v in data.items()}
    labels, annotations = dict(labels or {}), dict(annotations or {})
    body = client.V1ConfigMap(
        api_version="v1", kind="ConfigMap", data=data,
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels or None,
                                     annotations=annotations or None))
    metadata = {k: v for k, v in (("labels", labels), ("annotations", annotations)) if v}
    patch = {"data": data, **({"metadata": metadata} if metadata else {})}
    # Created, or patched when it exists; created again if it goes away in between.
    for attempt in range(2):
        with api_errors(**_context(api, namespace, name, timeout, "create")):
            try:
                core.create_namespaced_config_map(namespace, body, field_manager=FIELD_MANAGER,
                                                  _headers=dict(JSON_HEADERS), _request_timeout=timeout)
                return "created"
            except ApiException as err:
                if err.status != 409:  # 409 AlreadyExists: patch it
                    raise
        with api_errors(**_context(api, namespace, name, timeout, "patch")):
            try:
                core.patch_namespaced_config_map(name, namespace, patch, field_manager=FIELD_MANAGER,
                                                 _content_type=MERGE_PATCH, _request_timeout=timeout)
                return "updated"
            except ApiException as err:
                if err.status != 404 or attempt:
                    raise
    raise AssertionError("not reached: the second attempt returns or raises")

