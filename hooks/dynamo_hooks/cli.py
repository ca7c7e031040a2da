"""dynamo-hooks: the checks and steps the chart's hook Jobs and the worker's resolve sidecar run.

Exit status: 0 when every required check passed (warnings are printed), 1 when one failed (one line
on stderr names the peer and what is wrong), 2 on bad arguments.

Each command imports the modules it runs when it runs: a check of etcd, NATS or mgmtd and the mount
cleanup never load the Kubernetes client, and start in a fraction of the time."""

import argparse
import json
import math
import os
import sys

from dynamo_hooks import connections, report
from dynamo_hooks.kube_error import KubeError
from dynamo_hooks.report import ERROR, OK, Finding, Report

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def log(message):
    print(message, flush=True)


def split(text):
    return [a.strip() for a in text.split(",") if a.strip()]


def finish(reports, as_json):
    """Print the reports and return the exit status."""
    failed = [r for r in reports if not r.ok]
    # The first failure's line is said once, on stderr, below (a check with no peer at all has none).
    told = next(iter(failed[0].errors()), None) if failed else None
    if as_json:
        print(report.to_json(reports))
    else:
        for r in reports:
            for finding in r.findings:
                if finding is not told and (finding.status != OK or finding.reason != "ok"):
                    log(f"{finding.status}: {finding.line(r.check)}")
            if r.ok:
                log(r.summary())
    if failed:
        more = f" (and {len(failed) - 1} more failed: {', '.join(r.check for r in failed[1:])})" if failed[1:] else ""
        print(failed[0].summary() + more, file=sys.stderr)
    return 1 if failed else 0


def cmd_check_etcd(args):
    from dynamo_hooks import etcd

    conn = connections.from_single("etcd", args)
    return finish([etcd.check_etcd(split(args.endpoints), args.timeout, tls=conn.tls, credentials=conn.credentials)],
                  args.json)


def cmd_check_nats(args):
    from dynamo_hooks import nats

    conn = connections.from_single("nats", args)
    return finish([nats.check_nats(args.server, args.timeout, tls=conn.tls,
                                   credentials=conn.credentials)], args.json)


def cmd_check_mgmtd(args):
    from dynamo_hooks import mgmtd

    return finish([mgmtd.check_mgmtd(split(args.address), args.cluster_id, args.timeout, strict=args.strict)],
                  args.json)


def cmd_resolve_endpoints(args):
    from dynamo_hooks import endpoints, kube

    namespace, name, port = connections.parse_service(args.service, 0)
    service = f"{namespace}/{name}"
    try:
        found = endpoints.resolve_service(kube.api_client(), namespace, name, args.port_name, args.timeout,
                                          port_number=port or None)
    except KubeError as err:
        return finish([err.report("resolve-endpoints")], args.json)
    addresses = ",".join(found.addresses)
    findings = [Finding(service, OK, "ok", addresses, {"addresses": found.addresses})]
    if found.note:
        findings.append(Finding(service, OK, "port-by-number", found.note))
    return finish([Report("resolve-endpoints", findings, tally=f"{service}: {addresses}")], args.json)


def release_namespace(given=""):
    """`given`, else the pod's namespace (POD_NAMESPACE, or the ServiceAccount's namespace file)."""
    if given:
        return given
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with open(SERVICE_ACCOUNT_NAMESPACE) as f:
        return f.read().strip()


def cmd_pre_install(args):
    from dynamo_hooks import kube, preinstall

    plan = preinstall.Plan(
        peers=peers(args), resolve=args.resolve,
        mgmtd_addresses=split(args.mgmtd_addresses), cluster_id=args.cluster_id,
        mgmtd_check=args.mgmtd_check, strict=args.strict,
        record_namespace=release_namespace(args.record_namespace) if args.record_name else "",
        record_name=args.record_name,
        timeout=args.timeout,
        required=args.require,
    )
    try:
        api = kube.api_client() if needs_api(plan) else None
    except KubeError as err:
        return finish([err.report("pre-install")], args.json)
    return finish(preinstall.run(plan, api), args.json)


def needs_api(plan):
    uses_services = any(c.service and not c.explicit and not c.embedded for c in plan.peers)
    return (plan.resolve and uses_services) or bool(plan.record_name) or bool(plan.required)


def worker_api(plan):
    """A fresh API client for a handoff (the projected token is renewed on disk), or None without one."""
    if not plan.resolve:
        return None
    from dynamo_hooks import kube

    try:
        return kube.api_client()
    except KubeError as err:  # no usable client configuration: resolution falls back as if unreachable
        log(f"{err.message}; falling back")
        return None


def cmd_worker_init(args):
    from dynamo_hooks import worker_init

    plan = worker_init.Plan(
        peers=peers(args), resolve=args.resolve,
        record_dir=args.record_dir, record_name=args.record_name,
        record_namespace=release_namespace() if args.record_name else "", wait_seconds=args.wait,
        timeout=args.timeout, hf_home=args.hf_home,
        model_repo=args.model_repo, model_revision=args.model_revision, model_snapshot=args.model_snapshot,
    )
    try:
        env = worker_init.handoff(plan, worker_api(plan), log)
    except worker_init.HANDOFF_ERRORS as err:
        why = getattr(err, "message", None) or str(err)
        return finish([Report("worker-init", [Finding("", ERROR, "no-handoff", why)])], as_json=False)
    worker_init.write_env_file(args.output, env)
    log(f"wrote {args.output}")
    if args.serve:
        log(f"serving the worker's requests in {args.serve}")
        worker_init.serve(plan, lambda: worker_api(plan), args.output, args.serve, env, log)
    return 0


def cmd_cleanup_mounts(args):
    from dynamo_hooks import mounts

    report = mounts.cleanup(args.root, stale_only=args.stale_only, dry_run=args.dry_run, timeout=args.timeout)
    return finish([report], args.json)


def cmd_cleanup_nodes(args):
    from dynamo_hooks import kube, node_cleanup

    nodes = list(dict.fromkeys(split(args.nodes)))
    if not nodes:
        return finish([Report(node_cleanup.CHECK, [Finding("", OK, "ok", "no node")], tally="no node to clean up")],
                      args.json)
    if bool(args.owner_pod_name) != bool(args.owner_pod_uid):
        raise ValueError("--owner-pod-name and --owner-pod-uid go together")
    template = node_cleanup.load_template(args.job_template)
    try:
        namespace = release_namespace(args.namespace)
    except OSError as err:
        raise ValueError(f"no --namespace, no POD_NAMESPACE and no ServiceAccount namespace ({err})") from err
    owner = node_cleanup.pod_owner(args.owner_pod_name, args.owner_pod_uid) if args.owner_pod_name else None
    try:
        api = kube.api_client()
    except KubeError as err:
        return finish([err.report(node_cleanup.CHECK)], args.json)
    progress = (lambda message: print(message, file=sys.stderr, flush=True)) if args.json else log
    result = node_cleanup.cleanup_nodes(api, namespace, nodes, template, args.worker_selector, owner, args.pods_wait,
                                        args.deadline, args.timeout, log=progress)
    return finish([result], args.json)


def _seconds(text, positive):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"{text} is out of range: give a {'positive' if positive else 'non-negative'}"
                                         " number of seconds")
    return value


def positive_seconds(text):
    """An argparse type: seconds above 0 (a timeout of 0 would fail every check without trying it)."""
    return _seconds(text, positive=True)


def non_negative_seconds(text):
    """An argparse type: seconds, 0 included (no waiting)."""
    return _seconds(text, positive=False)


def add_common(parser):
    parser.add_argument("--timeout", type=positive_seconds, default=5.0,
                        help="seconds for each network call (default 5)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")


def build_parser():
    parser = argparse.ArgumentParser(prog="dynamo-hooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-etcd", help="GET /health of each etcd endpoint; ok when at least one is healthy")
    p.add_argument("--endpoints", required=True, help="http(s)://IP:PORT[,...]")
    connections.add_tls_arguments(p, "etcd")
    add_common(p)
    p.set_defaults(func=cmd_check_etcd)

    p = sub.add_parser("check-nats", help="INFO, CONNECT/PING -> PONG, and JetStream availability")
    p.add_argument("--server", required=True, help="nats://IP:PORT")
    connections.add_tls_arguments(p, "nats")
    add_common(p)
    p.set_defaults(func=cmd_check_nats)

    p = sub.add_parser("check-mgmtd", help="the 3FS RPC Mgmtd.getPrimaryMgmtd over TCP")
    p.add_argument("--address", required=True, help="TYPE://IP:PORT[,...] (TCP, RDMA, IPoIB)")
    p.add_argument("--cluster-id", required=True)
    p.add_argument("--strict", action="store_true", help="a 3FS reply that does not decode is an error, not a warning")
    add_common(p)
    p.set_defaults(func=cmd_check_mgmtd)

    p = sub.add_parser("resolve-endpoints", help="a Service's EndpointSlices -> IP:PORT of its serving pods")
    p.add_argument("--service", required=True, metavar="NAMESPACE/NAME[:PORT]",
                   help="with PORT, a Service without a port of that name is read on the port of that number")
    p.add_argument("--port-name", default="client")
    add_common(p)
    p.set_defaults(func=cmd_resolve_endpoints)

    p = sub.add_parser("pre-install", help="resolve etcd/NATS, verify them and mgmtd, record the result")
    add_peer_arguments(p)
    p.add_argument("--mgmtd-addresses", default="", help="TYPE://IP:PORT[,...]; empty: no 3FS")
    p.add_argument("--cluster-id", default="")
    p.add_argument("--mgmtd-check", choices=connections.CHECK_MODES, default="required")
    p.add_argument("--strict", action="store_true", help="an mgmtd reply that does not decode is an error")
    p.add_argument("--record-name", default="", help="ConfigMap to record the resolved addresses in")
    p.add_argument("--record-namespace", default="", help="its namespace (default: the pod's)")
    p.add_argument("--require", type=required_resource, action="append", default=[], metavar="JSON",
                   help='a resource the API server must serve: {"resource": "GROUP/VERSION/PLURAL", "kind": "...", '
                        '"from": "where it comes from"}')
    add_common(p)
    p.set_defaults(func=cmd_pre_install)

    p = sub.add_parser("worker-init", help="resolve and wait for etcd/NATS, find the model; write a file to source")
    add_peer_arguments(p)
    p.add_argument("--record-dir", default="", help="the last resolved addresses, mounted from their ConfigMap")
    p.add_argument("--record-name", default="", help="that ConfigMap, to record what this start resolves")
    p.add_argument("--wait", type=non_negative_seconds, default=300,
                   help="seconds to wait for etcd and NATS (default 300)")
    p.add_argument("--hf-home", default="", help="HF_HOME of the node's Hugging Face cache")
    p.add_argument("--model-repo", default="", help="Hugging Face repo id; empty: no model lookup")
    p.add_argument("--model-revision", default="main", help="ref in the cache's refs/ (default main)")
    p.add_argument("--model-snapshot", default="", help="a snapshot hash, instead of the revision")
    p.add_argument("--output", required=True, help="file of `export NAME=value` lines for the worker")
    p.add_argument("--serve", default="", metavar="REQUEST_FILE",
                   help="then keep running: hand over again for each new token the worker writes to this file")
    add_common(p)
    p.set_defaults(func=cmd_worker_init)

    p = sub.add_parser("cleanup-mounts", help="lazily detach the mounts under a directory, remove its empty dirs")
    p.add_argument("--root", required=True, help="absolute staging directory, e.g. /tmp/dynamo-3fs-mount")
    p.add_argument("--stale-only", action="store_true",
                   help="detach only mounts whose stat fails with a corrupted-mount errno or times out")
    p.add_argument("--dry-run", action="store_true", help="list what would be detached and removed; change nothing")
    p.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds for each stat or umount (default 5)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.set_defaults(func=cmd_cleanup_mounts)

    p = sub.add_parser("cleanup-nodes", help="run the mount cleanup Job on each node, all at once, bounded")
    p.add_argument("--nodes", required=True, help="NODE[,...]; empty: nothing to clean up")
    p.add_argument("--job-template", required=True, metavar="FILE", help="YAML batch/v1 Job; its name is the base")
    p.add_argument("--worker-selector", required=True, help="label selector of the worker pods to wait for")
    p.add_argument("--namespace", default="", help="where to create the Jobs (default: the pod's)")
    p.add_argument("--owner-pod-name", default="", help="this pod's name: it owns the Jobs (with --owner-pod-uid)")
    p.add_argument("--owner-pod-uid", default="")
    p.add_argument("--pods-wait", type=non_negative_seconds, default=60,
                   help="seconds to wait for a node's workers (default 60)")
    p.add_argument("--deadline", type=positive_seconds, default=120,
                   help="seconds for a node's Job to complete, else it is deleted (default 120)")
    add_common(p)
    p.set_defaults(func=cmd_cleanup_nodes)
    return parser


def peer_description(name):
    """An argparse type: a peer's JSON description -> its Connection."""
    def parse(text):
        try:
            return connections.from_description(name, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


def add_peer_arguments(parser):
    for name in connections.KINDS:
        parser.add_argument(f"--{name}", type=peer_description(name), metavar="JSON",
                            help=f"where {name} is and how to check it: {{explicit: [addresses]}} or {{namespace, "
                                 "service, port, portName, embedded}, with check (required, warn, off) and TLS files "
                                 f"ca, cert, key; absent when Dynamo does not use {name}")
    parser.add_argument("--resolve", action="store_true",
                        help="resolve Services to pod IPs from their EndpointSlices (a hostNetwork worker)")


def required_resource(text):
    from dynamo_hooks.api_resources import Required

    try:
        given = json.loads(text)
        resource = given["resource"]
        if resource.count("/") != 2:
            raise ValueError(f"resource {resource!r} is not GROUP/VERSION/PLURAL")
        return Required(resource, given.get("kind", resource), given.get("from", "its provider"))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise argparse.ArgumentTypeError(f"not a required resource: {text!r} ({err})") from err


def peers(args):
    """The peers given (--etcd, --nats): those the Dynamo processes use."""
    return [conn for conn in (getattr(args, name) for name in connections.KINDS) if conn is not None]


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"dynamo-hooks {args.command}: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a certificate, key, record or output file that cannot be read or written
        print(f"dynamo-hooks {args.command}: {err}", file=sys.stderr)
        return 1
