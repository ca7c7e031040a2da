"""etcd and NATS as the worker reaches them: where their addresses come from, and how each is checked.

An address comes from exactly one source, in this order: explicit values, the Service's ready pods
(read from its EndpointSlices, for a hostNetwork worker that cannot use cluster DNS), or the
Service's DNS name.
"""

import dataclasses
import functools
import importlib
import json
import os
import typing

from dynamo_hooks import tls
from dynamo_hooks.kube_error import KubeError
from dynamo_hooks.report import ERROR, WARNING, Finding, Report

CHECK_MODES = ("required", "warn", "off")
TLS_PARTS = ("ca", "cert", "key")  # in the order of Kind.tls_env


@dataclasses.dataclass(frozen=True)
class Kind:
    """What differs between etcd and NATS, as data."""

    name: str
    default_port: int
    port_name: str  # the client port's name in the common charts' Services (Bitnami's etcd; the NATS project's)
    env: str  # the worker's variable for the addresses, and their key in the record ConfigMap
    every_address: bool  # the variable holds every address (etcd), or only the first (NATS)
    schemes: tuple  # (plain, TLS) scheme of an address given as host:port
    credentials_env: str  # prefix of the USERNAME and PASSWORD variables
    tls_env: tuple  # variables holding the CA, client certificate and key (None: not read from one)
    check: str  # "module:function" of the protocol check, imported when it runs


KINDS = {kind.name: kind for kind in (
    Kind("etcd", 2379, "client", "ETCD_ENDPOINTS", True, ("http", "https"), "ETCD_AUTH_",
         ("ETCD_AUTH_CA", "ETCD_AUTH_CLIENT_CERT", "ETCD_AUTH_CLIENT_KEY"), "etcd:check_etcd"),
    # Dynamo accepts only nats:// URLs: TLS to NATS is negotiated by the server's settings.
    Kind("nats", 4222, "nats", "NATS_SERVER", False, ("nats", "nats"), "NATS_AUTH_",
         ("NATS_TLS_CA_CERT_PATH", None, None), "nats:check_nats"),
)}
# The keys of a peer's description (--etcd/--nats), as the chart's peer.source writes it, with a check mode
# and TLS files.
DESCRIPTION_KEYS = {"explicit", "namespace", "service", "port", "portName", "embedded", "check", "ca", "cert", "key"}


@dataclasses.dataclass
class Connection:
    kind: Kind
    explicit: list
    service: tuple | None  # (namespace, name, port name, port)
    embedded: bool
    check: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    credentials: tuple | None = None

    @property
    def name(self):
        return self.kind.name

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
        return address_url(host_port, self.kind.schemes[self.tls is not None])

    def dns_address(self):
        namespace, name, _, port = self.service
        return f"{name}.{namespace}.svc:{port}"


def address_url(address, scheme):
    """`IP:PORT` -> scheme://IP:PORT; a URL stays as it is, without a trailing slash."""
    address = address.strip()
    return address.rstrip("/") if "://" in address else f"{scheme}://{address}"


class Found(typing.NamedTuple):
    """Where a connection's addresses came from: explicit, endpointslices, dns, record, values or none."""
    urls: list
    source: str
    note: str = ""  # how they were found, when the user should know (a port taken by its number)


def add_tls_arguments(parser, name):
    """--<name>-ca, --<name>-cert, --<name>-key: the TLS files of a single check (check-etcd, check-nats)."""
    group = parser.add_argument_group(f"{name} TLS")
    for part, what, env in zip(TLS_PARTS, ("CA", "client certificate", "client key"), KINDS[name].tls_env, strict=True):
        group.add_argument(f"--{name}-{part}", help=f"{what}, PEM or file" + (f" (default ${env})" if env else ""))


def parse_service(text, default_port):
    """NAMESPACE/NAME[:PORT] -> (namespace, name, port)."""
    ref, _, port = text.partition(":")
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise ValueError(f"service {text!r}: expected NAMESPACE/NAME[:PORT]")
    return namespace, name, int(port or default_port)


def credentials(kind):
    """(user, password) from the kind's variables, else None; credentials come from the environment only."""
    user = os.environ.get(kind.credentials_env + "USERNAME")
    return (user, os.environ.get(kind.credentials_env + "PASSWORD") or "") if user else None


def tls_files(kind, given):
    """(ca, cert, key): those given, else the kind's variables."""
    return tuple(given.get(part) or (os.environ.get(env) if env else None)
                 for part, env in zip(TLS_PARTS, kind.tls_env, strict=True))


def from_single(name, args):
    """The Connection of a single check (check-etcd, check-nats): its TLS arguments and credentials."""
    kind = KINDS[name]
    given = {part: getattr(args, f"{name}_{part}") for part in TLS_PARTS}
    return Connection(kind, [], None, False, "required", *tls_files(kind, given), credentials(kind))


def from_description(name, text):
    """The Connection a peer's JSON description (--etcd, --nats) gives: `explicit` addresses, or the Service
    (`namespace`, `service`, `port`, `portName`, `embedded`), with `check` and TLS files; {} is no peer."""
    kind = KINDS[name]
    try:
        given = json.loads(text)
    except ValueError as err:
        raise ValueError(f"--{name}: not JSON ({err})") from None
    if not isinstance(given, dict) or set(given) - DESCRIPTION_KEYS:
        unknown = sorted(set(given) - DESCRIPTION_KEYS) if isinstance(given, dict) else given
        raise ValueError(f"--{name}: expected an object with keys among {sorted(DESCRIPTION_KEYS)}, got {unknown}")
    check = given.get("check", "required")
    if check not in CHECK_MODES:
        raise ValueError(f"--{name}: check {check!r} is not one of {', '.join(CHECK_MODES)}")
    service = None
    if given.get("service"):
        if not given.get("namespace"):
            raise ValueError(f"--{name}: service {given['service']!r} without its namespace")
        service = (given["namespace"], given["service"], given.get("portName") or kind.port_name,
                   int(given.get("port") or kind.default_port))
    explicit = given.get("explicit") or []
    if not isinstance(explicit, list):
        raise ValueError(f"--{name}: explicit must be a list of addresses")
    return Connection(kind, [a for a in explicit if a], service, bool(given.get("embedded")), check,
                      *tls_files(kind, given), credentials(kind))


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
    return ",".join(urls) if conn.kind.every_address else urls[0]


def check(conn, urls, timeout):
    """Run the protocol check of one connection against its addresses (its module imported now: cli.py)."""
    module, function = conn.kind.check.split(":")
    run = getattr(importlib.import_module(f"dynamo_hooks.{module}"), function)
    return run(urls if conn.kind.every_address else urls[0], timeout, tls=conn.tls, credentials=conn.credentials)


def failed_report(conn, error):
    """A Report for a connection whose addresses could not be found (a KubeError or no source)."""
    if isinstance(error, KubeError):
        return error.report(conn.name)
    return Report(conn.name, [Finding(conn.peer or conn.name, ERROR, "no-address", str(error))])


def soften(report, mode):
    """Only a required check fails the run: under warn (and under off, where only finding the addresses can
    fail) a failure is reported as a warning."""
    if mode == "required" or report.ok:
        return report
    for finding in report.findings:
        if finding.status == ERROR:
            finding.status = WARNING
    return report
