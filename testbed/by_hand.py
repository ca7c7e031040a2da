"""Dynamo started by hand, without the chart: etcd, NATS (JetStream), the real frontend and the stand-in engine
(testbed/trtllm_standin.py) as processes in one test host (testbed/netns.py), given what the chart gives the
worker container (its arguments and engine.yaml, rendered from the chart, and its environment). For the
stand-in's own tests, and as make bench's baseline for a request through the chart's release."""

import contextlib
import os
import subprocess
import time

import yaml

from hack import dynamo_runtime
from testbed import model_files, servers
from testbed.helm import CHART, ROOT, helm_executable
from testbed.netns import network_host

MODEL = "Qwen/Qwen3-8B"
STANDIN = ROOT / "testbed" / "trtllm_standin.py"
HTTP_PORT = 8000
DEADLINE = 60.0  # seconds for anything to start


def python(image):
    """The Python of the Dynamo runtime that stands for a Dynamo image (`make dynamo-runtime`)."""
    return str(dynamo_runtime.for_image(image.rsplit(":", 1)[1]) / "bin" / "python")


def chart_worker(values=None, env="ipoib"):
    """(the worker container's args, its engine.yaml, its image) as the chart renders them for an environment and
    more values."""
    out = subprocess.run([helm_executable(4), "template", "dynamo", str(CHART), "-f",
                          str(ROOT / "values" / f"{env}.yaml"), "-f", "-", "-s", "templates/worker/statefulset.yaml",
                          "-s", "templates/worker/configmap-engine.yaml"],
                         input=yaml.safe_dump(values or {}), capture_output=True, text=True, check=True,
                         timeout=60).stdout
    objects = {o["kind"]: o for o in yaml.safe_load_all(out) if o}
    worker = next(c for c in objects["StatefulSet"]["spec"]["template"]["spec"]["containers"] if c["name"] == "worker")
    return worker["args"], objects["ConfigMap"]["data"]["engine.yaml"], worker["image"]


class Deployment:
    """etcd, NATS and the Dynamo processes started in one test host; `url` is the frontend's; the workers get the
    arguments and engine.yaml the chart renders with `values`. Every process is stopped (SIGTERM, then SIGKILL)
    when the block ends."""

    def __init__(self, host, directory, etcd, nats, values=None):
        self.host, self.directory = host, directory
        self.processes = []
        self.hf_home = directory / "hf"
        self.model_path = model_files.put_in_hf_cache(self.hf_home, MODEL)
        args, engine, image = chart_worker(values)
        self.engine_yaml = directory / "engine.yaml"
        self.engine_yaml.write_text(engine)
        self.args = [a.replace("/etc/dynamo/engine/engine.yaml", str(self.engine_yaml)) for a in args]
        self.python = python(image)
        self.env = {"PATH": os.environ["PATH"], "HOME": str(directory), "ETCD_ENDPOINTS": etcd.url,
                    "NATS_SERVER": nats.url, "DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "0"}
        self.url = f"http://{host.address}:{HTTP_PORT}"

    def start(self, name, args, env=None):
        process = servers.Process([*self.host.prefix, self.python, *args], self.directory / f"{name}.log",
                                  env={**self.env, **(env or {})})
        self.processes.append(process)
        return process

    def frontend(self, router_mode="round-robin"):
        return self.start("frontend", ["-m", "dynamo.frontend", f"--http-port={HTTP_PORT}",
                                       f"--router-mode={router_mode}"])

    def worker(self, name, system_port, *extra, env=None, args=None):
        """A stand-in with the arguments (by default the chart's) and environment the chart gives the worker
        container."""
        args = [str(STANDIN), f"--model-path={self.model_path}", *(self.args if args is None else args), *extra]
        return self.start(name, args, env={"DYN_TCP_RPC_HOST": self.host.address,
                                           "DYN_SYSTEM_PORT": str(system_port), "HF_HOME": str(self.hf_home),
                                           "HF_HUB_OFFLINE": "1", **(env or {})})

    def system_url(self, port):
        return f"http://{self.host.address}:{port}"

    def wait_for(self, what, condition, timeout=DEADLINE):
        """Poll `condition` until it gives something true, which is returned; RuntimeError when a process
        exits or the deadline passes, with the ends of their logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if not process.alive():
                    raise RuntimeError(f"{process.log.name} exited with {process.popen.returncode} while waiting "
                                       f"for {what}:\n{process.tail()}")
            if result := condition():
                return result
            time.sleep(0.05)
        raise RuntimeError(f"no {what} within {timeout}s:\n" + "\n".join(
            f"--- {p.log.name}\n{p.tail()}" for p in self.processes))

    def stop(self):
        for process in self.processes:
            process.stop()


@contextlib.contextmanager
def started(directory, values=None):
    """A test host holding etcd and NATS, ready for the Dynamo processes a caller starts: yields a Deployment."""
    with network_host() as host, \
            servers.etcd_server(directory / "etcd", host=host.address, prefix=host.prefix) as etcd, \
            servers.nats_server(directory / "nats", host=host.address, prefix=host.prefix) as nats:
        deployment = Deployment(host, directory, etcd, nats, values)
        try:
            yield deployment
        finally:
            deployment.stop()
