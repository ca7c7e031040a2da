#!/usr/bin/env python3
"""Prometheus and promtool for the chart's alert rules and dashboards, built from the Prometheus Go module.

  hack/prometheus.py build    build both into ${XDG_CACHE_HOME:-~/.cache}/dynamo-offloading/prometheus/<key>/bin
  hack/prometheus.py path     print that bin directory (exit 1 when not built)

Built as hack/cluster.py builds the control plane: a scratch module requiring the release's module, whose
go.mod has no replace directives. Prometheus 3.X.Y is published as module version v0.3XX.Y (its VERSION file
says 3.X.Y). Every service discovery but Kubernetes' is left out (its plugins/ build tags), which halves the
build; the tests' Prometheus finds the release's pods through the control plane, as the Prometheus Operator's
scrape configurations do. The web UI's assets are not in the module (upstream builds them with npm): the
server's API answers, its UI pages do not.
"""

import argparse
import fcntl
import os
import pathlib
import sys

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from hack.cluster import go_binary, module_gomod, run, scratch_gomod, timed  # noqa: E402

MODULE = "github.com/prometheus/prometheus"
MODULE_VERSION = "v0.316.0"
VERSION = "3.16.0"
BINARIES = ("prometheus", "promtool")
# as upstream's .promu.yml sets the version; its tags (netgo, builtinassets) need the UI built first
LDFLAGS = f"-s -w -X github.com/prometheus/common/version.Version={VERSION}"
TAGS = "remove_all_sd,enable_kubernetes_sd"
RECIPE = "1"  # bump when the flags change: part of the cache key


def bin_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "dynamo-offloading" / "prometheus" / f"{VERSION}_r{RECIPE}" / "bin"


def built():
    return all(os.access(bin_dir() / b, os.X_OK) for b in BINARIES)


def build():
    bdir = bin_dir()
    if built():
        return bdir
    bdir.mkdir(parents=True, exist_ok=True)
    with open(bdir.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time
        if built():
            return bdir
        go = go_binary()
        env = dict(os.environ, CGO_ENABLED="0", GOWORK="off")
        src = bdir.parent / "src"
        src.mkdir(exist_ok=True)
        packages = [f"{MODULE}/cmd/{b}" for b in BINARIES]
        with timed(f"prometheus {VERSION}: modules"):
            (src / "go.mod").write_text(scratch_gomod("prometheus-build", MODULE, MODULE_VERSION,
                                                      module_gomod(go, env, MODULE, MODULE_VERSION, cwd=src)))
            (src / "go.sum").unlink(missing_ok=True)
            run([go, "get"] + [f"{p}@{MODULE_VERSION}" for p in packages], cwd=src, env=env)
        with timed(f"prometheus {VERSION}: go build {' '.join(BINARIES)}"):
            tmp = bdir / ".tmp"
            tmp.mkdir(exist_ok=True)
            run([go, "build", "-trimpath", "-tags", TAGS, "-ldflags", LDFLAGS, "-o", f"{tmp}/"] + packages,
                cwd=src, env=env)
            for binary in BINARIES:
                (tmp / binary).replace(bdir / binary)
            tmp.rmdir()
    out = run([bdir / "promtool", "--version"], capture=True).stdout
    if f"version {VERSION}" not in out:
        sys.exit(f"prometheus: promtool reports {out!r}, expected {VERSION}")
    return bdir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "path"])
    args = parser.parse_args(argv)
    if args.command == "build":
        print(f"prometheus: binaries in {build()}")
        return 0
    print(bin_dir())
    return 0 if built() else 1


if __name__ == "__main__":
    sys.exit(main())
