"""Build the dynamo-offloading-hooks image and save it as an OCI archive (see __init__.py)."""

import argparse
import os
import sys
import time

from hack.image.build import build, docker_available
from hack.image.size_report import size_report
from hack.image.steps import ROOT, StepError
from hack.image.wheels import build_wheels


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hack.image", description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the image tag: version in chart/Chart.yaml")
    parser.add_argument("--engine", choices=["auto", "docker", "buildah"], default="auto",
                        help="auto: docker when `docker info` succeeds, else buildah")
    parser.add_argument("--refresh-base", action="store_true",
                        help="rebuild the Debian base (newer packages) even when its cache is there")
    args = parser.parse_args(argv)
    engine = args.engine if args.engine != "auto" else ("docker" if docker_available() else "buildah")
    if engine == "buildah" and os.geteuid() != 0:
        print("hack.image: the buildah path (debootstrap, chroot) needs root", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        build_wheels(sys.executable)
        archive, base, n_base = build(args.version, engine, args.refresh_base)
        size_report(archive, base, n_base)
    except StepError as e:
        print(f"\nhack.image: FAILED at {e}", file=sys.stderr)
        return 1
    print(f"\n{archive.relative_to(ROOT)} ({engine}) in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
