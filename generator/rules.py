"""Cross-field rules a JSON Schema cannot say. chart/templates/_validate.tpl enforces the same rules
at install time; each message starts with the value paths it is about and says what to do."""

import math
import re

QUANTITY_SUFFIXES = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": 10**-3,
}
KVBM_DEFAULT_INIT_TIMEOUT = 1800


def quantity_bytes(quantity):
    """Bytes of a Kubernetes quantity such as 64Gi, 500M or 1e9."""
    match = re.fullmatch(r"([0-9.]+)([eE][0-9]+|[A-Za-z]*)", str(quantity))
    if not match:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, suffix = match.groups()
    if suffix[:1] in ("e", "E") and suffix[1:].isdigit():
        return float(number) * 10 ** int(suffix[1:])
    return float(number) * QUANTITY_SUFFIXES[suffix]


def mountpoint(values):
    t = values["threefs"]
    return t["mountRoot"]["mountPath"].rstrip("/") + "/" + t["mountSubPath"].strip("/")


def under(path, directory):
    path, directory = path.rstrip("/"), directory.rstrip("/")
    return path == directory or path.startswith(directory + "/")


def allocation_seconds(values):
    return math.ceil(values["kvbm"]["diskCacheGB"] * 60 / values["worker"]["startup"]["diskWriteGBPerMinute"])


def check_kvbm_tiers(values):
    k = values["kvbm"]
    if k["cpuCacheGB"] <= 0 and k["diskCacheGB"] <= 0:
        yield ("kvbm.cpuCacheGB, kvbm.diskCacheGB: KVBM needs at least one tier; "
               "set --set kvbm.cpuCacheGB=20 and/or --set kvbm.diskCacheGB=50")
    elif 0 < k["diskCacheGB"] < k["cpuCacheGB"]:
        yield (f"kvbm.diskCacheGB: the disk tier ({k['diskCacheGB']} GB) is smaller than the CPU tier "
               f"({k['cpuCacheGB']} GB); KVBM is write-through, so set kvbm.diskCacheGB >= kvbm.cpuCacheGB")


def check_disk_on_threefs(values):
    k, t = values["kvbm"], values["threefs"]
    if k["diskCacheGB"] > 0 and not t["enabled"] and under(k["diskCacheDir"], t["mountRoot"]["mountPath"]):
        yield (f"kvbm.diskCacheDir: {k['diskCacheDir']} is under the 3FS mount root {t['mountRoot']['mountPath']} "
               "but threefs.enabled is false, so the cache would land in the node's staging directory; "
               "set --set threefs.enabled=true or point kvbm.diskCacheDir elsewhere")
    if t["enabled"] and k["diskCacheGB"] > 0 and under(k["diskCacheDir"], t["mountRoot"]["mountPath"]) \
            and not under(k["diskCacheDir"], mountpoint(values)):
        yield (f"kvbm.diskCacheDir: {k['diskCacheDir']} is in the staging directory beside the 3FS mountpoint "
               f"{mountpoint(values)}, not on 3FS; put it under {mountpoint(values)}")


def check_threefs(values):
    t = values["threefs"]
    if not t["enabled"]:
        return
    if not t["mgmtdAddresses"]:
        yield ("threefs.mgmtdAddresses: required when threefs.enabled, "
               "e.g. --set threefs.mgmtdAddresses={RDMA://10.0.0.1:8000}")
    if not t["clusterId"]:
        yield "threefs.clusterId: required when threefs.enabled (the 3FS cluster id)"
    if bool(t["token"]) == bool(t["existingSecret"]):
        yield ("threefs.token, threefs.existingSecret: set exactly one when threefs.enabled "
               "(prefer existingSecret: kubectl create secret generic threefs-token --from-literal=token=...)")
    if t["transport"] == "rdma" and not t["ibDevices"]["deviceFilter"]:
        yield "threefs.ibDevices.deviceFilter: required with threefs.transport=rdma, e.g. [mlx5_0]"
    image = t["fuse"]["image"]
    if not image["repository"] or not (image["tag"] or image["digest"]):
        yield ("threefs.fuse.image: repository and tag (or digest) are required when threefs.enabled; "
               "no public 3FS FUSE image exists, so set your own")


def check_connection(values, name, explicit_key):
    v = values[name]
    explicit = bool(v[explicit_key])
    service = bool(v["service"]["name"] or v["service"]["namespace"])
    if service and not (v["service"]["name"] and v["service"]["namespace"]):
        yield f"{name}.service.name, {name}.service.namespace: set both to refer to an existing Service"
    if v["embedded"]["enabled"] and (explicit or service):
        others = ", ".join(p for p, on in ((f"{name}.{explicit_key}", explicit), (f"{name}.service", service)) if on)
        yield (f"{name}.embedded.enabled, {others}: the worker's {name} comes from exactly one source; "
               f"unset {others} to use the embedded server, or turn {name}.embedded.enabled off")
    if v["tls"]["enabled"] and not v["tls"]["existingSecret"]:
        tls = v["tls"]
        yield (f"{name}.tls.existingSecret: required with {name}.tls.enabled, a Secret holding "
               f"{tls['caKey']}, {tls['certKey']} and {tls['keyKey']}")
    if not (v["embedded"]["enabled"] or explicit or service):
        yield (f"{name}.embedded.enabled, {name}.{explicit_key}, {name}.service: no {name} is configured; "
               f"set --set {name}.embedded.enabled=true, or {name}.service.namespace and {name}.service.name")


def check_connections(values):
    yield from check_connection(values, "etcd", "endpoints")
    yield from check_connection(values, "nats", "url")


def check_dynamo_clients(values):
    if values["etcd"]["auth"]["existingSecret"] and values["etcd"]["tls"]["enabled"]:
        yield ("etcd.auth.existingSecret, etcd.tls.enabled: Dynamo 0.9.0's etcd client uses the password and then "
               "connects without TLS, dropping the client certificate; use one of them: "
               "--set etcd.auth.existingSecret= or --set etcd.tls.enabled=false")
    if values["nats"]["embedded"]["enabled"] and values["nats"]["tls"]["enabled"]:
        yield ("nats.tls.enabled, nats.embedded.enabled: Dynamo 0.9.0 has no NATS TLS client settings, so no worker "
               "or frontend could connect to an embedded NATS that requires TLS; --set nats.tls.enabled=false")


def check_dns(values):
    w = values["worker"]
    if w["dnsPolicy"] == "None" and not (w["dnsConfig"] or {}).get("nameservers"):
        yield ("worker.dnsPolicy, worker.dnsConfig.nameservers: dnsPolicy None takes every DNS setting from dnsConfig, "
               "and the API server refuses such a pod without a nameserver; set worker.dnsConfig.nameservers, "
               "e.g. --set worker.dnsConfig.nameservers={10.0.0.10}")


def check_worker_nodes(values):
    w = values["worker"]
    known = w["nodes"] or (w["nodeSelector"] or {}).get("kubernetes.io/hostname")
    if values["modelDownloader"]["enabled"] and not known:
        yield ("modelDownloader.enabled, worker.nodes: the downloader fills the Hugging Face cache of each worker "
               "node, and no node is known; list them in worker.nodes, e.g. --set worker.nodes={gpu-node-1}, "
               "or pin the worker with worker.nodeSelector kubernetes.io/hostname")


def worker_ports(values):
    ports = [("worker.systemPort", values["worker"]["systemPort"]),
             ("kvbm.leaderZmqPubPort", values["kvbm"]["leaderZmqPubPort"]),
             ("kvbm.leaderZmqAckPort", values["kvbm"]["leaderZmqAckPort"])]
    if values["kvbm"]["metrics"]["enabled"]:
        ports.append(("kvbm.metrics.port", values["kvbm"]["metrics"]["port"]))
    return ports


def check_ports(values):
    seen = {}
    for path, port in worker_ports(values):
        seen.setdefault(port, []).append(path)
    for port, paths in seen.items():
        if len(paths) > 1:
            yield (f"{', '.join(paths)}: all use port {port}; the worker's ports share one network "
                   "(the node's with hostNetwork), so give each its own port")


def check_startup(values):
    timeout = values["kvbm"]["leaderWorkerInitTimeoutSeconds"]
    if timeout is not None and values["kvbm"]["diskCacheGB"] > 0 and timeout < allocation_seconds(values):
        yield (f"kvbm.leaderWorkerInitTimeoutSeconds: {timeout} s is less than the estimated disk-tier allocation "
               f"of {allocation_seconds(values)} s (kvbm.diskCacheGB / worker.startup.diskWriteGBPerMinute); "
               "raise it, or leave it null to derive it")


def check_memory(values):
    limit = (values["worker"]["resources"].get("limits") or {}).get("memory")
    if limit is None:
        return
    shm = values["worker"]["shmSize"] or 0
    needed = values["kvbm"]["cpuCacheGB"] * 10**9 + quantity_bytes(shm) + values["worker"]["memoryHeadroomGi"] * 2**30
    if quantity_bytes(limit) < needed:
        yield (f"worker.resources.limits.memory: {limit} is below the pinned KVBM CPU tier "
               f"({values['kvbm']['cpuCacheGB']} GB) plus worker.shmSize ({shm}) plus worker.memoryHeadroomGi "
               f"({values['worker']['memoryHeadroomGi']} GiB); raise it to at least {math.ceil(needed / 2**30)}Gi "
               "or unset it to derive it")


def check_hooks_image(values):
    image = values["hooks"]["image"]
    if not image["registry"] and "/" not in image["repository"]:
        yield ("hooks.image.registry: required, the registry the hooks image was pushed to "
               "(make push REGISTRY=host:port); --set hooks.image.registry=host:port, "
               "or name the registry in hooks.image.repository")


RULES = [check_hooks_image, check_kvbm_tiers, check_disk_on_threefs, check_threefs, check_connections,
         check_dynamo_clients, check_dns, check_worker_nodes, check_ports, check_startup, check_memory]


def problems(values):
    """Every rule's messages for fully merged values (defaults plus overrides)."""
    return [message for rule in RULES for message in rule(values)]
