"""A real OCI registry (Debian's docker-registry, the CNCF distribution) on a free loopback port."""

import contextlib
import pathlib
import subprocess
import urllib.request

from testbed.servers import Process, free_port, wait_ready
from tests.helm import ROOT

REGISTRY = "/usr/bin/docker-registry"
CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""


def answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def registry(directory, start_timeout=15.0):
    """host:port of a registry serving plain HTTP from `directory`, stopped on exit."""
    directory = pathlib.Path(directory)
    port = free_port()
    config = directory / "config.yml"
    config.write_text(CONFIG.format(root=directory / "data", port=port))
    process = Process([REGISTRY, "serve", str(config)], directory / "registry.log")
    try:
        wait_ready("docker-registry", process, lambda: answers(port), start_timeout)
        yield f"127.0.0.1:{port}"
    finally:
        process.stop()


@contextlib.contextmanager
def pushed(directory, target, *make_args):
    """A registry (as above) once `make <target> REGISTRY=<it> PLAIN_HTTP=1 <make_args>` has pushed to it: its
    host:port and make's output."""
    with registry(directory) as address:
        done = subprocess.run(["make", "-s", target, f"REGISTRY={address}", "PLAIN_HTTP=1", *make_args], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        yield address, done.stdout + done.stderr
