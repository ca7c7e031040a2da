#!/usr/bin/env python3
"""A real, local Kubernetes control plane for the chart's tests, built from source.

  hack/cluster.py build    build etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
                           kubectl, kwok and kwokctl with `go build` (modules from the Go module
                           proxy) into ${XDG_CACHE_HOME:-~/.cache}/dynamo-offloading/cluster/<key>/bin
  hack/cluster.py up       build if needed, start the control plane on 127.0.0.1 (kwokctl's binary
                           runtime), write the admin kubeconfig, create the simulated nodes
  hack/cluster.py down     stop everything and remove the cluster's state
  hack/cluster.py status   whether it runs (exit 0) or not (exit 1), and the kubeconfig path

Nothing is downloaded but Go modules. Kubernetes' commands are built from a scratch module that
requires k8s.io/kubernetes and replaces each staging module (required at v0.0.0 in the release's
go.mod) by the published v0.<minor>.<patch>; etcd and kwok from scratch modules that require them
and mirror their replace directives. The kwok Stages are in hack/cluster/stages.yaml and the
simulated nodes in hack/cluster/nodes.json.
"""

import argparse
import base64
import contextlib
import fcntl
import json
import os
import pathlib
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "hack" / "cluster"
DEFAULT_OUT = ROOT / "build" / "cluster"

KUBERNETES = "v1.35.4"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
# The Prometheus Operator's CRDs the chart's PodMonitor, ServiceMonitor and PrometheusRule need, from its module's
# example/prometheus-operator-crd/ (the proxy serves this version of the root module).
PROMETHEUS_OPERATOR = "v0.92.1"
MONITORING_CRDS = ("podmonitors", "servicemonitors", "prometheusrules")
# Bump when the build recipe (flags, binaries) changes: it is part of the cache key.
RECIPE = "1"

CLUSTER_NAME = "dynamo"
RUNNER_LABEL = "dynamo-offloading.test/runner"


# ---------------------------------------------------------------------------------------------
# helpers


def log(msg):
    print(f"cluster: {msg}", flush=True)


def die(msg):
    print(f"cluster: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


@contextlib.contextmanager
def timed(what):
    start = time.monotonic()
    yield
    log(f"{what}: {time.monotonic() - start:.1f}s")


def go_binary():
    found = shutil.which("go")
    if found:
        return found
    if os.access("/usr/local/go/bin/go", os.X_OK):
        return "/usr/local/go/bin/go"
    die("no go on PATH (nor /usr/local/go/bin/go)")


def run(cmd, cwd=None, env=None, capture=False, check=True):
    """Run a command; on failure print its output and exit."""
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
    )
    if check and proc.returncode != 0:
        if capture and proc.stdout:
            sys.stderr.write(proc.stdout)
        die(f"command failed ({proc.returncode}): {' '.join(str(c) for c in cmd)}")
    return proc


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "dynamo-offloading" / "cluster"


def cache_key():
    return f"k8s-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}_r{RECIPE}"


def bin_dir():
    return cache_dir() / cache_key() / "bin"


# ---------------------------------------------------------------------------------------------
# build


def staging_version(kube_version):
    """k8s.io/kubernetes v1.35.4 -> the staging modules' v0.35.4."""
    m = re.fullmatch(r"v1\.(\d+)\.(\d+)", kube_version)
    if not m:
        die(f"unexpected Kubernetes version {kube_version}")
    return f"v0.{m.group(1)}.{m.group(2)}"


def module_gomod(go, env, module, version, cwd):
    """The parsed go.mod (`go mod edit -json`) of module@version, fetched through the proxy."""
    out = run([go, "mod", "download", "-json", f"{module}@{version}"], cwd=cwd, env=env,
              capture=True).stdout
    info = json.loads(out)
    if info.get("Error"):
        die(f"go mod download {module}@{version}: {info['Error']}")
    parsed = run([go, "mod", "edit", "-json", info["GoMod"]], cwd=cwd, env=env, capture=True).stdout
    return json.loads(parsed)


def scratch_gomod(name, module, version, gomod, staging=None):
    """go.mod text of a scratch module that requires module@version.

    Mirrors the target's go and godebug lines. Its replace directives that point at local paths
    (an upstream monorepo's siblings) cannot apply to a dependency, so each such module that the
    target requires is pinned to the version it requires, or, when it requires v0.0.0 (the
    Kubernetes staging modules), to the published `staging` version.
    """
    required = {r["Path"]: r["Version"] for r in gomod.get("Require") or []}
    lines = [f"// Generated by hack/cluster.py: builds {module} {version}.", f"module local/{name}", ""]
    if gomod.get("Go"):
        lines += [f"go {gomod['Go']}", ""]
    for gd in gomod.get("GoDebug") or []:
        lines.append(f"godebug {gd['Key']}={gd['Value']}")
    if gomod.get("GoDebug"):
        lines.append("")
    lines += [f"require {module} {version}", ""]
    pins = {}
    for path, ver in required.items():
        if ver == "v0.0.0":
            if not staging:
                die(f"{module} requires {path} v0.0.0 and no staging version is known")
            pins[path] = (path, staging)
    for rep in gomod.get("Replace") or []:
        old, new = rep["Old"]["Path"], rep["New"]
        if new.get("Version"):  # a replacement by another module version applies as it is
            pins[old] = (new["Path"], new["Version"])
        elif old in required and required[old] != "v0.0.0":
            pins[old] = (old, required[old])  # a local sibling: its published twin
    if pins:
        lines.append("replace (")
        for path in sorted(pins):
            lines.append(f"\t{path} => {pins[path][0]} {pins[path][1]}")
        lines.append(")")
    return "\n".join(lines) + "\n"


def kube_ldflags(version):
    m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    values = {
        "gitVersion": version,
        "gitMajor": m.group(1),
        "gitMinor": m.group(2),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in values.items()]
    return " ".join(flags)


# name -> (module, version, [(binary, package)], build flags, staging version)
def components():
    kube_pkgs = [(b, f"k8s.io/kubernetes/cmd/{b}") for b in
                 ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")]
    return {
        "etcd": ("go.etcd.io/etcd/server/v3", ETCD, [("etcd", "go.etcd.io/etcd/server/v3")],
                 ["-trimpath", "-ldflags", "-s -w"], None),
        "kubernetes": ("k8s.io/kubernetes", KUBERNETES, kube_pkgs,
                       # as upstream's hack/lib/golang.sh builds the release binaries
                       ["-trimpath", "-tags", "selinux,notest,grpcnotrace",
                        "-ldflags", kube_ldflags(KUBERNETES)],
                       staging_version(KUBERNETES)),
        "kwok": ("sigs.k8s.io/kwok", KWOK,
                 [("kwok", "sigs.k8s.io/kwok/cmd/kwok"), ("kwokctl", "sigs.k8s.io/kwok/cmd/kwokctl")],
                 # as upstream's hack/releases.sh
                 ["-trimpath", "-ldflags",
                  f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={KWOK}"
                  f" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion={KUBERNETES}"],
                 None),
    }


def all_binaries():
    return [b for comp in components().values() for b, _ in comp[2]]


def binaries_present():
    bdir = bin_dir()
    return all(os.access(bdir / b, os.X_OK) for b in all_binaries())


def build(force=False):
    """Build every binary that is missing from the cache; return the bin directory."""
    bdir = bin_dir()
    if not force and binaries_present():
        log(f"binaries cached in {bdir}")
        return bdir
    key_dir = bdir.parent
    key_dir.mkdir(parents=True, exist_ok=True)
    with open(key_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time
        go = go_binary()
        env = dict(os.environ, CGO_ENABLED="0", GOWORK="off")
        bdir.mkdir(parents=True, exist_ok=True)
        total = time.monotonic()
        for name, (module, version, binaries, flags, staging) in components().items():
            todo = [(b, p) for b, p in binaries if force or not os.access(bdir / b, os.X_OK)]
            if not todo:
                continue
            src = key_dir / "src" / name
            src.mkdir(parents=True, exist_ok=True)
            with timed(f"{name} {version}: modules"):
                gomod = module_gomod(go, env, module, version, cwd=src)
                text = scratch_gomod(f"{name}-build", module, version, gomod, staging)
                stamp = src / ".go.mod.generated"
                if not stamp.exists() or stamp.read_text() != text:
                    (src / "go.mod").write_text(text)
                    (src / "go.sum").unlink(missing_ok=True)
                    run([go, "get"] + [f"{p}@{version}" for _, p in binaries], cwd=src, env=env)
                    stamp.write_text(text)
            for binary, pkg in todo:
                tmp = bdir / f".{binary}.tmp"
                with timed(f"{name} {version}: go build {binary}"):
                    run([go, "build"] + flags + ["-o", tmp, pkg], cwd=src, env=env)
                tmp.replace(bdir / binary)
        (bdir.parent / "versions.json").write_text(json.dumps(
            {"kubernetes": KUBERNETES, "etcd": ETCD, "kwok": KWOK, "recipe": RECIPE,
             "go": run([go, "env", "GOVERSION"], capture=True).stdout.strip()}, indent=2) + "\n")
        log(f"build total: {time.monotonic() - total:.1f}s")
    out = run([bdir / "kube-apiserver", "--version"], capture=True).stdout.strip()
    if KUBERNETES not in out:
        die(f"kube-apiserver reports {out!r}, expected {KUBERNETES}")
    log(f"binaries in {bdir} ({out})")
    return bdir


# ---------------------------------------------------------------------------------------------
# the API, with the admin client certificate


class Api:
    def __init__(self, server, ca, cert, key):
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(cert), str(key))

    def request(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, raw
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path):
        code, raw = self.request("GET", path)
        return json.loads(raw) if code == 200 else None

    def ready(self):
        try:
            code, _ = self.request("GET", "/readyz", timeout=3)
            return code == 200
        except (OSError, ssl.SSLError):
            return False


# ---------------------------------------------------------------------------------------------
# the cluster


class Cluster:
    def __init__(self, out):
        self.out = pathlib.Path(out).resolve()
        self.workdir = self.out / "kwok"  # KWOK_WORKDIR
        self.dir = self.workdir / "clusters" / CLUSTER_NAME
        self.pki = self.dir / "pki"
        self.kubeconfig = self.out / "kubeconfig"
        self.audit_log = self.dir / "logs" / "audit.log"

    def env(self):
        return dict(os.environ, KWOK_WORKDIR=str(self.workdir))

    def server(self):
        """https://127.0.0.1:PORT from kwokctl's own kubeconfig, or None."""
        path = self.dir / "kubeconfig.yaml"
        if not path.exists():
            return None
        m = re.search(r"server:\s*(https://127\.0\.0\.1:\d+)", path.read_text())
        return m.group(1) if m else None

    def api(self):
        server = self.server()
        if not server or not (self.pki / "admin.key").exists():
            return None
        return Api(server, self.pki / "ca.crt", self.pki / "admin.crt", self.pki / "admin.key")

    def pids(self):
        """{pid file: pid} of the processes kwokctl started, alive and still ours."""
        found = {}
        for pidfile in sorted((self.dir / "pids").glob("*.pid")) if (self.dir / "pids").exists() else []:
            try:
                pid = int(pidfile.read_text().strip())
                cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except (ValueError, OSError):
                continue
            # the pid may have been reused: the process must run a binary from this cluster
            if (str(self.dir) in cmdline or str(bin_dir()) in cmdline) and not _exited(pid):
                found[pidfile.stem] = pid
        return found

    def running(self):
        api = self.api()
        return bool(self.pids()) and api is not None and api.ready()

    def write_kubeconfig(self):
        def b64(name):
            return base64.b64encode((self.pki / name).read_bytes()).decode()
        ctx = f"kwok-{CLUSTER_NAME}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": ctx, "cluster": {
                "server": self.server(), "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": ctx, "user": {
                "client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}}],
            "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx}}],
            "current-context": ctx,
            "preferences": {},
        }
        tmp = self.kubeconfig.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        tmp.chmod(0o600)
        tmp.replace(self.kubeconfig)

    def kwokctl_config(self, bdir, port):
        """kwokctl's configuration: options, then our Stages (which replace kwok's defaults)."""
        options = {
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "kubeVersion": KUBERNETES,
            "etcdVersion": ETCD.lstrip("v"),
            "kwokVersion": KWOK,
            "kubeApiserverPort": port,
            "cacheDir": str(self.workdir / "cache"),
            "kubectlBinary": str(bdir / "kubectl"),  # for `kwokctl kubectl`, instead of a download
            "kubeAuditPolicy": str(DATA / "audit-policy.yaml"),  # the log: Cluster.audit_log
        }
        kwokctl = {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokctlConfiguration",
                   "options": options}
        stages = (DATA / "stages.yaml").read_text()
        return json.dumps(kwokctl, indent=2) + "\n---\n" + stages

    def logs_tail(self, lines=30):
        for logfile in sorted((self.dir / "logs").glob("*.log")) if (self.dir / "logs").exists() else []:
            content = logfile.read_text(errors="replace").splitlines()[-lines:]
            print(f"--- {logfile}", file=sys.stderr)
            print("\n".join(content), file=sys.stderr)

    def up(self, port, timeout):
        bdir = build()
        if self.running():
            log(f"already running: {self.server()}")
            self.write_kubeconfig()
        else:
            if self.dir.exists() or self.pids():
                log("cleaning up a stopped cluster")
                self.down(quiet=True)
            self.out.mkdir(parents=True, exist_ok=True)
            config = self.out / "kwokctl.yaml"
            config.write_text(self.kwokctl_config(bdir, port))
            cmd = [
                bdir / "kwokctl", "--config", config, "create", "cluster",
                "--name", CLUSTER_NAME, "--runtime", "binary",
                "--etcd-binary", bdir / "etcd",
                "--kube-apiserver-binary", bdir / "kube-apiserver",
                "--kube-controller-manager-binary", bdir / "kube-controller-manager",
                "--kube-scheduler-binary", bdir / "kube-scheduler",
                "--kwok-controller-binary", bdir / "kwok",
                # kwok's pod IPs: off the API server's default Service range (10.0.0.0/24)
                "--extra-args", "kwok-controller=cidr=10.244.0.1/16",
                "--kubeconfig", "",  # do not touch ~/.kube/config
                "--wait", f"{timeout}s", "--timeout", f"{timeout}s",
            ]
            with timed("kwokctl create cluster"):
                proc = run(cmd, env=self.env(), capture=True, check=False)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout)
                self.logs_tail()
                die("kwokctl create cluster failed (logs above)")
            self.write_kubeconfig()
        api = self.api()
        deadline = time.monotonic() + timeout
        with timed("API server ready"):
            while not api.ready():
                if time.monotonic() > deadline:
                    self.logs_tail()
                    die("the API server did not become ready")
                time.sleep(0.5)
        with timed("nodes and the default ServiceAccount"):
            self.create_objects(api, deadline)
        with timed("Prometheus Operator CRDs"):
            self.apply_monitoring_crds(bdir)
        log(f"running: {self.server()}")
        log(f"kubeconfig: {self.kubeconfig}")

    def create_objects(self, api, deadline):
        """The StorageClass and the simulated nodes; then wait for the nodes to be Ready."""
        storage_class = json.loads((DATA / "storageclass.json").read_text())
        nodes = json.loads((DATA / "nodes.json").read_text())["items"]
        for path, obj in [("/apis/storage.k8s.io/v1/storageclasses", storage_class)] + \
                [("/api/v1/nodes", node) for node in nodes]:
            code, raw = api.request("POST", path, obj)
            if code not in (201, 409):  # 409: it exists
                die(f"creating {obj['kind']} {obj['metadata']['name']}: {code} {raw[:300]!r}")
        names = {n["metadata"]["name"] for n in nodes}
        while True:
            listed = api.get_json("/api/v1/nodes") or {"items": []}
            ready = {n["metadata"]["name"] for n in listed["items"]
                     if any(c["type"] == "Ready" and c["status"] == "True"
                            for c in n.get("status", {}).get("conditions") or [])}
            sa = api.get_json("/api/v1/namespaces/default/serviceaccounts/default")
            if names <= ready and sa is not None:
                log(f"{len(ready)} nodes Ready: {', '.join(sorted(ready))}")
                return
            if time.monotonic() > deadline:
                self.logs_tail()
                die(f"not Ready: {sorted(names - ready)}; default ServiceAccount: {sa is not None}")
            time.sleep(0.5)

    def apply_monitoring_crds(self, bdir):
        """PodMonitor, ServiceMonitor and PrometheusRule, as a cluster with the Prometheus Operator has them."""
        module = "github.com/prometheus-operator/prometheus-operator"
        info = json.loads(run([go_binary(), "mod", "download", "-json", f"{module}@{PROMETHEUS_OPERATOR}"],
                              cwd=cache_dir(), capture=True).stdout)
        if info.get("Error"):
            die(f"go mod download {module}@{PROMETHEUS_OPERATOR}: {info['Error']}")
        crds = pathlib.Path(info["Dir"]) / "example" / "prometheus-operator-crd"
        kubectl = [bdir / "kubectl", "--kubeconfig", self.kubeconfig]
        run(kubectl + ["apply", "--server-side", *[a for name in MONITORING_CRDS
                                                   for a in ("-f", crds / f"monitoring.coreos.com_{name}.yaml")]],
            capture=True)
        run(kubectl + ["wait", "--for=condition=Established", "--timeout=60s",
                       *[f"crd/{name}.monitoring.coreos.com" for name in MONITORING_CRDS]], capture=True)

    def down(self, quiet=False):
        kwokctl = bin_dir() / "kwokctl"
        if self.dir.exists() and os.access(kwokctl, os.X_OK):
            proc = run([kwokctl, "delete", "cluster", "--name", CLUSTER_NAME], env=self.env(),
                       capture=True, check=False)
            if proc.returncode != 0 and not quiet:
                log(f"kwokctl delete cluster failed ({proc.returncode}); stopping the processes")
        # whatever kwokctl left running: by pid, checked to be ours
        pids = self.pids()
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pids and time.monotonic() < deadline:
            pids = {n: p for n, p in pids.items() if not _exited(p)}
            time.sleep(0.2)
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)
        for path in (self.kubeconfig, self.out / "kwokctl.yaml"):
            path.unlink(missing_ok=True)
        if not quiet:
            log("stopped")

    def status(self):
        if self.running():
            print(f"running: {self.server()} ({len(self.pids())} processes)")
            print(f"kubeconfig: {self.kubeconfig}")
            print(f"kubectl: {bin_dir() / 'kubectl'}")
            return 0
        if self.pids():
            print(f"broken: processes {sorted(self.pids())} run but the API server is not ready")
        else:
            print("not running")
        print(f"kubeconfig: {self.kubeconfig}{'' if self.kubeconfig.exists() else ' (absent)'}")
        return 1


def _exited(pid):
    """True when the process is gone or a zombie."""
    try:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    m = re.search(r"^State:\s*(\S)", status, re.M)
    return not m or m.group(1) in "ZX"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the binaries (cached)")
    p_build.add_argument("--force", action="store_true", help="rebuild even if cached")
    for name, text in (("up", "start the cluster"), ("down", "stop the cluster"),
                       ("status", "whether the cluster runs")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--out", default=str(DEFAULT_OUT),
                       help="directory of the kubeconfig and the cluster's state (default: %(default)s)")
        if name == "up":
            p.add_argument("--port", type=int, default=0, help="API server port (default: a free one)")
            p.add_argument("--timeout", type=int, default=180, help="seconds to wait (default: %(default)s)")
    args = parser.parse_args()
    start = time.monotonic()
    if args.command == "build":
        build(force=args.force)
    elif args.command == "up":
        Cluster(args.out).up(args.port, args.timeout)
    elif args.command == "down":
        Cluster(args.out).down()
    elif args.command == "status":
        sys.exit(Cluster(args.out).status())
    log(f"{args.command} took {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    main()
