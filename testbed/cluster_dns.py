"""Cluster DNS for the runner's pods, as hosts files: there is no DNS server and no kube-proxy here, so a
Service's names (name, name.namespace, name.namespace.svc, name.namespace.svc.cluster.local) lead to the
addresses of its endpoints in its EndpointSlices (ready ones; every one for publishNotReadyAddresses), as a
headless Service's do. A pod reaches a Service on its endpoints' port, so a Service whose port differs from
its target port cannot be reached here. Each namespace has its own file (short names are its own Services'),
rewritten in place so that the files bound over a container's /etc/hosts follow."""

import collections
import pathlib

from kubernetes import client

from testbed import cluster

DOMAIN = "cluster.local"
# No server answers at this address inside a test host: a name that is not in the hosts file fails at once.
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


class HostsFiles:
    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.resolv_conf = self.directory / "resolv.conf"
        self.resolv_conf.write_text(RESOLV_CONF)
        self._entries = []

    def path(self, namespace):
        """The hosts file of pods in `namespace`."""
        path = self.directory / f"hosts-{namespace}"
        if not path.exists():
            self._write(path, namespace)
        return path

    def resolves(self, namespace, name):
        """Whether pods in `namespace` resolve `name` now."""
        return any(name in line.split()[1:] for line in self.path(namespace).read_text().splitlines())

    def refresh(self):
        """Read the Services and their endpoints again and rewrite every file that changed."""
        slices = collections.defaultdict(set)
        for item in client.DiscoveryV1Api(cluster.api()).list_endpoint_slice_for_all_namespaces().items:
            service = (item.metadata.labels or {}).get("kubernetes.io/service-name")
            for endpoint in item.endpoints or []:
                conditions = endpoint.conditions
                slices[(item.metadata.namespace, service)].add((tuple(endpoint.addresses),
                                                                 conditions is None or conditions.ready is not False))
        entries = []
        for service in cluster.core().list_service_for_all_namespaces().items:
            key = (service.metadata.namespace, service.metadata.name)
            every = bool(service.spec.publish_not_ready_addresses)
            addresses = sorted({a for found, ready in slices.get(key, ()) if ready or every for a in found})
            entries += [(key[0], key[1], address) for address in addresses]
        self._entries = entries
        for path in self.directory.glob("hosts-*"):
            self._write(path, path.name.removeprefix("hosts-"))

    def _write(self, path, namespace):
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        for service_namespace, name, address in self._entries:
            names = [f"{name}.{service_namespace}.svc.{DOMAIN}", f"{name}.{service_namespace}.svc",
                     f"{name}.{service_namespace}"] + ([name] if service_namespace == namespace else [])
            lines.append(f"{address} {' '.join(names)}")
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text() != text:
            with path.open("r+" if path.exists() else "w") as out:  # the same file: bind mounts of it follow
                out.write(text)
                out.truncate()
