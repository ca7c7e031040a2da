"""The Kubernetes API client of the hooks, and how its failures become a KubeError (kube_error.py).

A call is bounded by the timeout given to it: urllib3's retries are off, so a failed connect or read is
reported at once instead of being tried again behind the caller's back."""

import contextlib
import json
import os
import re

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from dynamo_hooks.kube_error import (  # noqa: F401 - the callers' one import for the client and its errors
    API_ERROR,
    FORBIDDEN,
    NO_PORT,
    NO_READY_ENDPOINTS,
    NOT_FOUND,
    TIMEOUT,
    UNREACHABLE,
    KubeError,
)

# Headers of a create call: the client sends no Content-Type for it by itself.
JSON_HEADERS = {"Content-Type": "application/json"}

_USER = re.compile(r'User "system:serviceaccount:([^:"]+):([^"]+)"')


def configure(configuration):
    """Make every call of a client built on `configuration` a single attempt, bounded by its timeout."""
    configuration.retries = False
    configuration.client_go_retries = False
    return configuration


def api_client():
    """An ApiClient: the pod's ServiceAccount when running in a pod (KUBERNETES_SERVICE_HOST is set),
    else the kubeconfig ($KUBECONFIG, or ~/.kube/config). Without either: KubeError, reason unreachable."""
    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                    client_configuration=configuration)
    except (config.ConfigException, OSError) as err:
        raise KubeError("kubernetes-api", UNREACHABLE,
                        f"unreachable: no Kubernetes API client configuration ({err})") from err
    return client.ApiClient(configure(configuration))


def _status_message(err):
    """The `message` of the Status object an apiserver sends with an error, else the HTTP reason."""
    body = getattr(err, "body", None)
    if body:
        try:
            status = json.loads(body)
            if isinstance(status, dict) and status.get("message"):
                return str(status["message"])
        except ValueError:
            pass
        return str(body).strip()[:200]
    return str(getattr(err, "reason", "") or "").strip()


def _server(api):
    host = getattr(getattr(api, "configuration", None), "host", None)
    return f" at {host}" if host else ""


def to_kube_error(err, *, peer, verb, resource, namespace, name=None, kind=None, api=None, timeout=None):
    """Turn an ApiException or a urllib3 timeout/connection error into a KubeError.

    `verb` and `resource` say what was being done (get services, list endpointslices, ...); `kind` and
    `name` name the object for a 404 ("Service baseten/etcd-headless not found"). Anything else is
    returned unchanged."""
    what = f"{kind or resource} {namespace}/{name}" if name else f"{resource} in namespace {namespace}"
    doing = f"{verb} {what}"
    if isinstance(err, ApiException):
        status = err.status or 0
        detail = _status_message(err)
        if status == 404:
            return KubeError(peer, NOT_FOUND, f"{what} not found" if name else f"not found: {doing} ({detail})")
        if status == 403:
            user = _USER.search(detail)
            who = f"ServiceAccount {user.group(1)}/{user.group(2)}" if user else "this pod's ServiceAccount"
            return KubeError(peer, FORBIDDEN,
                             f"forbidden: cannot {verb} {resource} in namespace {namespace} "
                             f"({who} needs a Role there granting {verb} on {resource})")
        if status == 401:
            return KubeError(peer, API_ERROR, f"unauthorized: the Kubernetes API{_server(api)} rejected the "
                                              f"credentials while trying to {doing}")
        if status == 0:  # raised by the client itself, e.g. a TLS failure
            return KubeError(peer, UNREACHABLE, f"unreachable: cannot {doing} on the Kubernetes API{_server(api)}: "
                                                f"{' '.join(detail.split())}")
        return KubeError(peer, API_ERROR, f"api-error: HTTP {status} while trying to {doing}: {detail}")
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    # NewConnectionError derives from ConnectTimeoutError but means the connection was refused or failed
    if isinstance(err, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ProtocolError):
        return KubeError(peer, UNREACHABLE, f"unreachable: cannot connect to the Kubernetes API{_server(api)} "
                                            f"to {doing}: {_cause(err)}")
    if isinstance(err, urllib3.exceptions.TimeoutError | TimeoutError):
        within = f" within {timeout:g} s" if timeout else ""
        return KubeError(peer, TIMEOUT, f"timeout: no answer from the Kubernetes API{_server(api)}{within} "
                                        f"to {doing}")
    if isinstance(err, urllib3.exceptions.HTTPError | ConnectionError):
        return KubeError(peer, UNREACHABLE, f"unreachable: the Kubernetes API{_server(api)} failed to answer "
                                            f"{doing}: {_cause(err)}")
    return err


def _cause(err):
    text = str(err)
    # urllib3 prefixes its messages with the connection object's repr
    text = re.sub(r"^<[^>]*>:\s*", "", text)
    return text or type(err).__name__


@contextlib.contextmanager
def api_errors(**context):
    """`with api_errors(peer=..., verb=..., resource=..., namespace=...):` raises a KubeError for any
    failure of the API calls inside; `context` is passed to to_kube_error."""
    try:
        yield
    except (ApiException, urllib3.exceptions.HTTPError, TimeoutError, ConnectionError) as err:
        converted = to_kube_error(err, **context)
        if converted is err:
            raise
        raise converted from err
