"""dynamo-hooks: the checks and steps the chart's hook Jobs and the worker's init container run.

Exit status: 0 when every required check passed (warnings are printed), 1 when one failed (one line
on stderr names the peer and what is wrong), 2 on bad arguments."""

import argparse
import json
import os
import sys

from dynamo_hooks import connections, endpoints, etcd, kube, mgmtd, model_path, nats, preinstall, report, worker_init
from dynamo_hooks.kube import KubeError

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def log(message):
    print(message, flush=True)


def split(text):
    return [a.strip() for a in text.split(",") if a.strip()]


def finish(reports, as_json):
    """Print the reports and return the exit status."""
    if as_json:
        print(report.to_json(reports))
    else:
        for r in reports:
            for finding in r.findings:
                if finding.status != report.OK or finding.reason != "ok":
                    log(f"{finding.status}: {finding.line(r.check)}")
            if r.ok:
                log(r.summary())
    failed = [r for r in reports if not r.ok]
    if failed:
        more = f" (and {len(failed) - 1} more failed: {', '.join(r.check for r in failed[1:])})" if failed[1:] else ""
        print(failed[0].summary() + more, file=sys.stderr)
    return 1 if failed else 0


def fail(message):
    print(message, file=sys.stderr)
    return 1


def cmd_check_etcd(args):
    conn = connections.from_args(args, "etcd")
    return finish([etcd.check_etcd([conn.url(a) for a in split(args.endpoints)], args.timeout,
                                   tls=conn.tls_context(), credentials=conn.credentials)], args.json)


def cmd_check_nats(args):
    conn = connections.from_args(args, "nats")
    return finish([nats.check_nats(args.server, args.timeout, tls=conn.tls_context(),
                                   credentials=conn.credentials)], args.json)


def cmd_check_mgmtd(args):
    return finish([mgmtd.check_mgmtd(split(args.address), args.cluster_id, args.timeout, strict=args.strict)],
                  args.json)


def cmd_resolve_endpoints(args):
    namespace, name, _ = connections.parse_service(args.service, 0)
    try:
        found = endpoints.resolve_service(kube.api_client(), namespace, name, args.port_name, args.timeout)
    except KubeError as err:
        return fail(f"{err.peer}: {err.message}")
    print(json.dumps({"service": f"{namespace}/{name}", "addresses": found}) if args.json else ",".join(found))
    return 0


def release_namespace(args):
    if args.record_namespace:
        return args.record_namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with open(SERVICE_ACCOUNT_NAMESPACE) as f:
        return f.read().strip()


def cmd_pre_install(args):
    plan = preinstall.Plan(
        etcd=connections.from_args(args, "etcd"), nats=connections.from_args(args, "nats"),
        resolve=args.resolve, mgmtd_addresses=split(args.mgmtd_addresses), cluster_id=args.cluster_id,
        mgmtd_check=args.mgmtd_check, strict=args.strict,
        record_namespace=release_namespace(args) if args.record_name else "", record_name=args.record_name,
        record_labels=dict(split_pair(p) for p in args.record_label),
        record_annotations=dict(split_pair(p) for p in args.record_annotation),
        timeout=args.timeout,
    )
    try:
        reports, recorded = preinstall.run(plan, kube.api_client() if needs_api(plan) else None)
    except KubeError as err:
        return fail(f"{err.peer}: {err.message}")
    status = finish(reports, args.json)
    if recorded and not args.json:
        log(f"recorded the resolved addresses in ConfigMap {plan.record_namespace}/{plan.record_name} ({recorded})")
    return status


def needs_api(plan):
    uses_services = any(c.service and not c.explicit and not c.embedded for c in (plan.etcd, plan.nats))
    return (plan.resolve and uses_services) or bool(plan.record_name)


def split_pair(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def cmd_worker_init(args):
    plan = worker_init.Plan(
        etcd=connections.from_args(args, "etcd"), nats=connections.from_args(args, "nats"), resolve=args.resolve,
        record_dir=args.record_dir, wait_seconds=args.wait, timeout=args.timeout, hf_home=args.hf_home,
        model_repo=args.model_repo, model_revision=args.model_revision, model_snapshot=args.model_snapshot,
    )
    try:
        api = kube.api_client() if plan.resolve else None
    except Exception as err:  # no usable in-cluster config: resolution falls back like an unreachable API
        log(f"Kubernetes API client unavailable ({err}); falling back")
        api = None
    try:
        env = worker_init.handoff(plan, api, log)
    except (TimeoutError, KubeError, model_path.ModelNotFound) as err:
        return fail(getattr(err, "message", None) or str(err))
    worker_init.write_env_file(args.output, env)
    log(f"wrote {args.output}")
    return 0


def add_common(parser):
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds for each network call (default 5)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")


def build_parser():
    parser = argparse.ArgumentParser(prog="dynamo-hooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-etcd", help="GET /health of each etcd endpoint; ok when at least one is healthy")
    p.add_argument("--endpoints", required=True, help="http(s)://IP:PORT[,...]")
    connections.add_arguments(p, "etcd")
    add_common(p)
    p.set_defaults(func=cmd_check_etcd)

    p = sub.add_parser("check-nats", help="INFO, CONNECT/PING -> PONG, and JetStream availability")
    p.add_argument("--server", required=True, help="nats://IP:PORT")
    connections.add_arguments(p, "nats")
    add_common(p)
    p.set_defaults(func=cmd_check_nats)

    p = sub.add_parser("check-mgmtd", help="the 3FS RPC Mgmtd.getPrimaryMgmtd over TCP")
    p.add_argument("--address", required=True, help="TYPE://IP:PORT[,...] (TCP, RDMA, IPoIB)")
    p.add_argument("--cluster-id", required=True)
    p.add_argument("--strict", action="store_true", help="a 3FS reply that does not decode is an error, not a warning")
    add_common(p)
    p.set_defaults(func=cmd_check_mgmtd)

    p = sub.add_parser("resolve-endpoints", help="a Service's EndpointSlices -> IP:PORT of its serving pods")
    p.add_argument("--service", required=True, metavar="NAMESPACE/NAME")
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
    p.add_argument("--record-label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--record-annotation", action="append", default=[], metavar="KEY=VALUE")
    add_common(p)
    p.set_defaults(func=cmd_pre_install)

    p = sub.add_parser("worker-init", help="resolve and wait for etcd/NATS, find the model; write a file to source")
    add_peer_arguments(p)
    p.add_argument("--record-dir", default="", help="the pre-install hook's record, mounted from its ConfigMap")
    p.add_argument("--wait", type=float, default=300, help="seconds to wait for etcd and NATS (default 300)")
    p.add_argument("--hf-home", default="", help="HF_HOME of the node's Hugging Face cache")
    p.add_argument("--model-repo", default="", help="Hugging Face repo id; empty: no model lookup")
    p.add_argument("--model-revision", default="main", help="ref in the cache's refs/ (default main)")
    p.add_argument("--model-snapshot", default="", help="a snapshot hash, instead of the revision")
    p.add_argument("--output", required=True, help="file of `export NAME=value` lines for the worker")
    add_common(p)
    p.set_defaults(func=cmd_worker_init)
    return parser


def add_peer_arguments(parser):
    connections.add_arguments(parser, "etcd")
    connections.add_arguments(parser, "nats")
    parser.add_argument("--resolve", action="store_true",
                        help="resolve Services to pod IPs from their EndpointSlices (a hostNetwork worker)")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"dynamo-hooks {args.command}: {err}", file=sys.stderr)
        return 2
