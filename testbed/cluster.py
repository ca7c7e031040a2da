"""The local control plane of hack/cluster.py, seen from the tests: its API, kubectl, Helm against it, and
what a release leaves in a namespace."""

import asyncio
import copy
import functools
import importlib.util
import json
import pathlib
import subprocess
import time
import uuid

import pyhelm3
import yaml
from kubernetes import client, config

from generator.environments import overlay
from testbed.helm import CHART, ROOT, helm_executable

spec = importlib.util.spec_from_file_location("cluster_script", ROOT / "hack" / "cluster.py")
cluster_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cluster_script)

KUBECONFIG = cluster_script.DEFAULT_OUT / "kubeconfig"
KUBECTL = cluster_script.bin_dir() / "kubectl"
# What a test overlay sets where an environment leaves a PLACEHOLDER: no image is pulled here.
CLUSTER_VALUES = {
    "hooks": {"image": {"registry": "registry.test:5000"}},
    "threefs": {"fdbClusterFile": "dynamo:abc123@10.2.10.55:4510", "fuse": {"image": {"tag": "1.0"}}},
}
PRIVILEGED = {"pod-security.kubernetes.io/enforce": "privileged"}
SEED_NAMESPACE = "baseten"
SLICES_MANAGER = "dynamo-offloading-tests"  # managed-by of the EndpointSlices the tests write


def values_file(directory, *layers):
    """The layers merged as Helm merges values files, written to one file for a helm command line."""
    path = pathlib.Path(directory) / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(functools.reduce(overlay, layers, {})))
    return str(path)


def ensure_running():
    """Start the cluster when it is not running (a second call returns at once)."""
    if subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "hack/cluster.py"), "status"],
                      capture_output=True).returncode != 0:
        subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "hack/cluster.py"), "up"], check=True,
                       timeout=1800)


@functools.cache
def api():
    return config.new_client_from_config(config_file=str(KUBECONFIG))


def core():
    return client.CoreV1Api(api())


def kubectl(*args, check=True, input=None):
    return subprocess.run([str(KUBECTL), f"--kubeconfig={KUBECONFIG}", *args], capture_output=True, text=True,
                          timeout=120, check=check, input=input)


def helm(major, *args, check=True, timeout=600):
    """A helm command against the cluster (for what pyhelm3 does not do: test, rollback, status)."""
    return subprocess.run([helm_executable(major), f"--kubeconfig={KUBECONFIG}", *args], capture_output=True,
                          text=True, timeout=timeout, check=check)


@functools.cache
def _helm_client(major):
    return pyhelm3.Client(executable=helm_executable(major), kubeconfig=KUBECONFIG, default_timeout="5m")


def install(major, release, namespace, *values, wait=True, timeout="5m", chart=CHART):
    """`helm upgrade --install` of `chart` through pyhelm3 with the values layered as Helm layers values files
    (lists replaced, not joined as pyhelm3 merges several dicts); returns the ReleaseRevision."""
    merged = functools.reduce(overlay, values, {})

    async def run():
        client_ = _helm_client(major)
        chart_ = await client_.get_chart(chart)
        return await client_.install_or_upgrade_release(release, chart_, merged, namespace=namespace,
                                                        create_namespace=False, wait=wait, timeout=timeout)
    return asyncio.run(run())


def uninstall(major, release, namespace):
    async def run():
        await _helm_client(major).uninstall_release(release, namespace=namespace, wait=True, timeout="5m")
    asyncio.run(run())


def prepare(namespace, values):
    """What an environment expects to exist in the release namespace already: the 3FS token Secret it names."""
    threefs = values.get("threefs", {})
    if threefs.get("enabled") and threefs.get("existingSecret"):
        core().create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=threefs["existingSecret"]), string_data={"token": "test-token"}))


def seed_services():
    """The seed's etcd-headless and nats-headless Services in baseten (values/ipoib.yaml names them), with the
    client port names of the charts that made them (Bitnami's etcd: client; the NATS project's: nats), without
    pods behind them. Returns the namespace."""
    if not any(ns.metadata.name == SEED_NAMESPACE for ns in core().list_namespace().items):
        create_namespace(SEED_NAMESPACE)
    existing = {s.metadata.name for s in core().list_namespaced_service(SEED_NAMESPACE).items}
    for name, port_name, port in (("etcd-headless", "client", 2379), ("nats-headless", "nats", 4222)):
        if name not in existing:
            core().create_namespaced_service(SEED_NAMESPACE, client.V1Service(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1ServiceSpec(cluster_ip="None", selector={"app": name},
                                          ports=[client.V1ServicePort(name=port_name, port=port)])))
    return SEED_NAMESPACE


def endpoint(ip, ready=True, serving=True, terminating=False):
    """An EndpointSlice endpoint; a condition given as None is left unset (nil)."""
    return client.V1Endpoint(addresses=[ip], conditions=client.V1EndpointConditions(
        ready=ready, serving=serving, terminating=terminating))


def add_endpoint_slice(namespace, service, endpoints, ports, address_type="IPv4"):
    """An EndpointSlice of `service` written by the test (`ports`: (name, port) pairs, or None), as the
    EndpointSlice controller would for pods: it leaves slices of another manager alone."""
    client.DiscoveryV1Api(api()).create_namespaced_endpoint_slice(namespace, client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(generate_name=f"{service}-", labels={
            "kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": SLICES_MANAGER}),
        address_type=address_type, endpoints=endpoints,
        ports=None if ports is None else [client.DiscoveryV1EndpointPort(name=n, port=p) for n, p in ports]))


def publish(service, address, port_name, port, namespace=SEED_NAMESPACE):
    """The Service's only serving endpoint (a test host's address), as an EndpointSlice of the tests' own."""
    delete_endpoint_slices(namespace, service)
    add_endpoint_slice(namespace, service, [endpoint(address)], [(port_name, port)])


def delete_endpoint_slices(namespace, service):
    """The EndpointSlices of `service` that tests wrote."""
    client.DiscoveryV1Api(api()).delete_collection_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service},"
                                  f"endpointslice.kubernetes.io/managed-by={SLICES_MANAGER}")


DYNAMO_CRD = ROOT / "testbed" / "dynamoworkermetadata-crd.yaml"


def install_dynamo_crd():
    """Dynamo's DynamoWorkerMetadata CRD, as a cluster with Dynamo's platform has it, once Established."""
    kubectl("apply", "--server-side", "-f", str(DYNAMO_CRD))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/dynamoworkermetadatas.nvidia.com")


def remove_dynamo_crd():
    kubectl("delete", "--ignore-not-found", "--wait", "-f", str(DYNAMO_CRD))


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def create_namespace(name, labels=PRIVILEGED):
    core().create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=dict(labels))))
    # A new namespace races the creation of its default ServiceAccount.
    wait_until(lambda: any(sa.metadata.name == "default"
                           for sa in core().list_namespaced_service_account(name).items), f"{name}/default")
    return name


def delete_namespace(name):
    """Delete the namespace, and its pods at once: the runner's pods have no kubelet once the test is over,
    so a graceful deletion would never finish and their host ports would stay taken. A terminating namespace
    takes no new pod, so once none is listed none comes back."""
    core().delete_namespace(name, propagation_policy="Background")
    def no_pods_left():
        core().delete_collection_namespaced_pod(name, grace_period_seconds=0)
        return not core().list_namespaced_pod(name).items
    wait_until(no_pods_left, f"the pods of namespace {name} deleted", within=60)


def wait_until(condition, what, within=120.0, every=0.5):
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within:g} s")
        time.sleep(every)


@functools.cache
def namespaced_resources():
    """Every namespaced resource type the server lists (kubectl api-resources), as kubectl names them."""
    out = kubectl("api-resources", "--namespaced=true", "--verbs=list", "-o", "name").stdout
    # Events are the cluster's record of what happened, not objects of the release.
    return [r for r in out.split() if r not in ("events", "events.events.k8s.io")]


def component_selector(release, component=None):
    """The label selector of a release's objects, or of one component's."""
    return f"app.kubernetes.io/instance={release}" + (f",app.kubernetes.io/component={component}" if component else "")


def release_pods(namespace, release, component=None):
    return core().list_namespaced_pod(namespace, label_selector=component_selector(release, component)).items


def pod_ready(pod):
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


# What every authenticated identity may do (system:basic-user): ask what it may do.
SELF_REVIEWS = {"authorization.k8s.io", "authentication.k8s.io"}


def as_service_account(namespace, name):
    """An API client holding a fresh token of the ServiceAccount."""
    token = core().create_namespaced_service_account_token(
        name, namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    configuration = copy.copy(api().configuration)
    configuration.cert_file = configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def granted_rules(account_api, namespace):
    """What the client's identity may do in `namespace`, as the server says (SelfSubjectRulesReview):
    (api group, resource, verb, resource names), asking aside."""
    review = client.AuthorizationV1Api(account_api).create_self_subject_rules_review(
        client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace)))
    found = set()
    for rule in review.status.resource_rules:
        for group in rule.api_groups or [""]:
            if group in SELF_REVIEWS:
                continue
            for resource in rule.resources or []:
                for verb in rule.verbs:
                    found.add((group, resource, verb, tuple(rule.resource_names or ())))
    return found


def audited_requests(namespace, account):
    """What the ServiceAccount `account` of `namespace` asked the API server, as its audit log records it
    (hack/cluster/audit-policy.yaml): (namespace, api group, resource, verb, response code) per request on a
    resource ("" for the namespace of a cluster-wide one)."""
    user = f"system:serviceaccount:{namespace}:{account}"
    found = []
    for line in cluster_script.Cluster(cluster_script.DEFAULT_OUT).audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef")
        if event["user"]["username"] != user or not ref:  # no objectRef: /api, /version, ...
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        found.append((ref.get("namespace", ""), ref.get("apiGroup", ""), resource, event["verb"],
                      event["responseStatus"]["code"]))
    return found


def objects_of(release, namespace):
    """"kind/name" of every object in `namespace` that belongs to `release`: by its instance label, or by
    a name that starts with the release name (objects Helm or a controller made without labels)."""
    found = set()
    out = kubectl("get", ",".join(namespaced_resources()), "-n", namespace, "-o", "json").stdout
    for item in json.loads(out)["items"]:
        meta = item["metadata"]
        labels = meta.get("labels") or {}
        name = meta["name"]
        if labels.get("app.kubernetes.io/instance") == release or name.startswith(f"{release}-") \
                or name.startswith(f"sh.helm.release.v1.{release}."):
            found.add(f"{item['kind']}/{name}")
    return sorted(found)
