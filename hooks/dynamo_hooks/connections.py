"""etcd and NATS as the worker reaches them: where their addresses come from, and how each is checked.

An address comes from exactly one source, in this order: explicit values, the Service's ready pods
(read from its EndpointSlices, for a hostNetwork worker that cannot use cluster DNS), or the
Service's DNS name.
"""

import dataclasses
import functools
import os
import typing

from dynamo_hooks import tls
from dynamo_hooks.kube_error import KubeError
from dynamo_hooks.report import ERROR, WARNING, Finding, Report

CHECK_MODES = ("required", "warn", "off")
RECORD_KEYS = {"etcd": "ETCD_ENDPOINTS", "nats": "NATS_SERVER"}
# The client port's name in the common charts' Services (Bitnami's etcd; the NATS project's own NATS).
DEFAULT_PORT_NAMES = {"etcd": "client", "nats": "nats"}


@dataclasses.dataclass
class Connection:
    name: str  # etcd or nats
    explicit: list
    service: tuple | None  # (namespace, name, port name, port)
    embedded: bool
    check: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    credentials: tuple | None = None

    @property
    def peer(self):
        return "/".join(self.service[:2]) if self.service else ",".join(self.explicit)

    @functools.cached_property
    def tls(self):
        """The client TLS context, built once (None without a CA or a certificate)."""
        if not (self.ca or self.cert):
            return None
        return tls.client_context(self.ca, self.cert, self.key)

    def url(self, host_port):
        if self.name == "etcd":
            from dynamo_hooks import etcd  # each peer's protocol module loads with the first use (cli.py)

            return etcd.normalize(host_port, self.tls)
        return host_port if "://" in host_port else f"nats://{host_port}"

    def dns_address(self):
        namespace, name, _, port = self.service
        return f"{name}.{namespace}.svc:{port}"


class Found(typing.NamedTuple):
    """Where a connection's addresses came from: explicit, endpointslices, dns, record, values or none."""
    urls: list
    source: str
    note: str = ""  # how they were found, when the user should know (a port taken by its number)


def add_arguments(parser, name):
    """--<name>-endpoints|url, --<name>-service, --<name>-port-name, --<name>-embedded, --<name>-check, TLS."""
    group = parser.add_argument_group(name)
    explicit = "--etcd-endpoints" if name == "etcd" else "--nats-url"
    group.add_argument(explicit, dest=f"{name}_explicit", default="",
                       help="explicit addresses, comma-separated; skips resolution")
    group.add_argument(f"--{name}-service", default="", metavar="NAMESPACE/NAME[:PORT]",
                       help="the Service to resolve to ready pod IPs")
    group.add_argument(f"--{name}-port-name", default=DEFAULT_PORT_NAMES[name],
                       help="name of the client port in the Service; without it, the port's number")
    group.add_argument(f"--{name}-embedded", action="store_true",
                       help="the chart's own server: created after pre-install hooks, so not checked by them")
    group.add_argument(f"--{name}-check", choices=CHECK_MODES, default="required")
    env_prefix = {"etcd": "ETCD_AUTH_", "nats": "NATS_AUTH_"}[name]
    ca_env = "ETCD_AUTH_CA" if name == "etcd" else "NATS_TLS_CA_CERT_PATH"
    group.add_argument(f"--{name}-ca", default=os.environ.get(ca_env), help=f"CA, PEM or file (default ${ca_env})")
    group.add_argument(f"--{name}-cert", default=os.environ.get("ETCD_AUTH_CLIENT_CERT") if name == "etcd" else None,
                       help="client certificate, PEM or file")
    group.add_argument(f"--{name}-key", default=os.environ.get("ETCD_AUTH_CLIENT_KEY") if name == "etcd" else None,
                       help="client key, PEM or file")
    parser.set_defaults(**{f"{name}_credentials_env": env_prefix})


def parse_service(text, default_port):
    """NAMESPACE/NAME[:PORT] -> (namespace, name, port)."""
    ref, _, port = text.partition(":")
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise ValueError(f"service {text!r}: expected NAMESPACE/NAME[:PORT]")
    return namespace, name, int(port or default_port)


def from_args(args, name):
    """The Connection the parsed arguments describe; credentials come from the environment only."""
    service = None
    if getattr(args, f"{name}_service"):
        namespace, svc, port = parse_service(getattr(args, f"{name}_service"), 2379 if name == "etcd" else 4222)
        service = (namespace, svc, getattr(args, f"{name}_port_name"), port)
    prefix = getattr(args, f"{name}_credentials_env")
    user, password = os.environ.get(prefix + "USERNAME"), os.environ.get(prefix + "PASSWORD")
    return Connection(
        name=name,
        explicit=[a for a in getattr(args, f"{name}_explicit").split(",") if a],
        service=service,
        embedded=getattr(args, f"{name}_embedded"),
        check=getattr(args, f"{name}_check"),
        ca=getattr(args, f"{name}_ca"), cert=getattr(args, f"{name}_cert"), key=getattr(args, f"{name}_key"),
        credentials=(user, password or "") if user else None,
    )


def addresses(conn, api, resolve, timeout):
    """Found addresses as URLs. `api` is only used when `resolve` (a hostNetwork worker) is set; a KubeError
    from it, or its absence, propagates for the caller to fall back."""
    if conn.explicit:
        return Found([conn.url(a) for a in conn.explicit], "explicit")
    if conn.service is None:
        return Found([], "none")
    if resolve:
        if api is None:
            raise KubeError("kubernetes-api", "unreachable", "unreachable: no Kubernetes API client")
        namespace, name, port_name, port = conn.service
        from dynamo_hooks import endpoints  # the Kubernetes client: loaded only by the commands that resolve

        resolved = endpoints.resolve_service(api, namespace, name, port_name, timeout, port_number=port)
        return Found([conn.url(a) for a in resolved.addresses], "endpointslices", resolved.note)
    return Found([conn.url(conn.dns_address())], "dns")


def env_value(conn, urls):
    """The worker's ETCD_ENDPOINTS (every endpoint) or NATS_SERVER (one server) for these addresses."""
    return ",".join(urls) if conn.name == "etcd" else urls[0]


def check(conn, urls, timeout):
    """Run the protocol check of one connection against its addresses."""
    from dynamo_hooks import etcd, nats

    if conn.name == "etcd":
        return etcd.check_etcd(urls, timeout, tls=conn.tls, credentials=conn.credentials)
    return nats.check_nats(env_value(conn, urls), timeout, tls=conn.tls, credentials=conn.credentials)


def failed_report(conn, error):
    """A Report for a connection whose addresses could not be found (a KubeError or no source)."""
    if isinstance(error, KubeError):
        finding = Finding(error.peer, ERROR, error.reason, error.message)
    else:
        finding = Finding(conn.peer or conn.name, ERROR, "no-address", str(error))
    return Report(conn.name, [finding])


def soften(report, mode):
    """Only a required check fails the run: under warn (and under off, where only finding the addresses can
    fail) a failure is reported as a warning."""
    if mode == "required" or report.ok:
        return report
    for finding in report.findings:
        if finding.status == ERROR:
            finding.status = WARNING
    return report
