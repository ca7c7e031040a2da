"""The ConfigMap that records the etcd/NATS pod IPs last resolved, for the worker's pods to fall back on
when they cannot read the Kubernetes API.

The chart creates it (without data, so Helm owns it, never overwrites its keys and deletes it with the
release); the pre-upgrade hook and the worker's resolve sidecar merge-patch their keys into it. Before
the first install's objects exist there is nothing to patch, and that is not an error."""

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from dynamo_hooks.kube import api_errors

FIELD_MANAGER = "dynamo-hooks"
MERGE_PATCH = "application/merge-patch+json"


def patch_record(api, namespace, name, data, timeout):
    """Merge-patch `data` (str -> str) into ConfigMap `namespace`/`name`: True, or False when it does not
    exist yet. Other failures raise KubeError; the call is bounded by `timeout` seconds."""
    patch = {"data": {str(k): str(v) for k, v in data.items()}}
    with api_errors(peer=f"{namespace}/{name}", verb="patch", resource="configmaps", kind="ConfigMap", name=name,
                    namespace=namespace, api=api, timeout=timeout):
        try:
            client.CoreV1Api(api).patch_namespaced_config_map(name, namespace, patch, field_manager=FIELD_MANAGER,
                                                              _content_type=MERGE_PATCH, _request_timeout=timeout)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
    return True
