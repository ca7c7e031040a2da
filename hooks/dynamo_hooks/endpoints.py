"""A Service's serving pods, read from its EndpointSlices: how a hostNetwork pod, which cannot use cluster
DNS, finds etcd and NATS.

A pod counts when its endpoint is serving (the pod is Ready) and not terminating. `ready` is not enough:
a headless Service with publishNotReadyAddresses marks every endpoint ready, while `serving` still
follows the pod's readiness. Per the EndpointConditions API, a nil serving or ready means true and a nil
terminating means false; when serving is absent (older controllers), ready stands in for it."""

import ipaddress
import typing

from kubernetes import client

from dynamo_hooks.kube import NO_PORT, NO_READY_ENDPOINTS, KubeError, api_errors

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Resolved(typing.NamedTuple):
    addresses: list  # sorted unique "IP:PORT"
    note: str = ""  # how the port was chosen when it was not by its name


def is_serving(conditions):
    """serving (else ready, else true), and not terminating."""
    if conditions is None:
        return True
    if conditions.terminating:
        return False
    serving = conditions.serving if conditions.serving is not None else conditions.ready
    return serving is not False


def _ipv4(address):
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return True


def _port_label(name):
    return repr(name) if name else '"" (unnamed)'


def resolve_service(api, namespace, service, port_name, timeout, port_number=None):
    """The serving pods of Service `namespace`/`service` as Resolved addresses "IP:PORT", on its port named
    `port_name`; when no port has that name (charts name NATS's client port nats, tcp-client or client),
    on the port numbered `port_number`, saying so in the note. `api` is a kubernetes ApiClient; each of the
    two API calls is bounded by `timeout` seconds.

    Raises KubeError with reason not-found (no such Service), forbidden, timeout, unreachable, api-error,
    no-port (no EndpointSlice has a port of that name or number) or no-ready-endpoints."""
    peer = f"{namespace}/{service}"
    common = dict(peer=peer, namespace=namespace, api=api, timeout=timeout)
    with api_errors(verb="get", resource="services", kind="Service", name=service, **common):
        client.CoreV1Api(api).read_namespaced_service(service, namespace, _request_timeout=timeout)
    with api_errors(verb="list", resource="endpointslices", **common):
        slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}", _request_timeout=timeout).items or []

    all_ports = [p for endpoint_slice in slices for p in endpoint_slice.ports or []]
    by_number = bool(port_number) and not any((p.name or "") == port_name for p in all_ports) \
        and any(p.port == port_number for p in all_ports)
    note = f"Service {peer} has no port named {port_name!r}; used port {port_number}" if by_number else ""

    found, ports_seen = set(), set()
    port_found = False
    not_serving = terminating = other_families = total = 0
    for endpoint_slice in slices:
        endpoints = endpoint_slice.endpoints or []
        ports = endpoint_slice.ports or []
        ports_seen.update(p.name or "" for p in ports)
        matching = [p.port for p in ports if p.port and (p.port == port_number if by_number
                                                         else (p.name or "") == port_name)]
        if not matching:
            continue
        port_found = True
        if endpoint_slice.address_type != "IPv4":
            other_families += len(endpoints)
            continue
        for endpoint in endpoints:
            total += 1
            conditions = endpoint.conditions
            if conditions is not None and conditions.terminating:
                terminating += 1
                continue
            if not is_serving(conditions):
                not_serving += 1
                continue
            found.update(f"{address}:{matching[0]}" for address in endpoint.addresses or [] if _ipv4(address))

    if found:
        return Resolved(sorted(found), note)
    if not port_found and ports_seen:
        seen = ", ".join(_port_label(n) for n in sorted(ports_seen))
        number = f" or numbered {port_number}" if port_number else ""
        raise KubeError(peer, NO_PORT, f"Service {peer} has no port named {port_name!r}{number} in its "
                                       f"EndpointSlices (ports seen: {seen})")
    why = []
    if not_serving:
        why.append(f"{not_serving} not ready")
    if terminating:
        why.append(f"{terminating} terminating")
    if other_families:
        why.append(f"{other_families} not IPv4")
    if total and not why:
        why.append(f"{total} without an IPv4 address")
    if not slices:
        why.append("no EndpointSlices")
    elif not why:
        why.append("no endpoints")
    raise KubeError(peer, NO_READY_ENDPOINTS, f"Service {peer} has no serving endpoints ({', '.join(why)})")
