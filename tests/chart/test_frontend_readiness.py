"""The frontend's readiness, run as rendered against a loopback /v1/models: Ready only while it lists every
model the worker groups serve (Dynamo's /health says 200 with no worker at all), and the probe's message
names what is missing."""

import http.server
import json
import subprocess
import threading

import pytest

from testbed import servers
from tests.helm import container, environment_values, one, render

SCALE_OUT = environment_values("scale-out")
MODELS = ("Qwen/Qwen3-8B", "Qwen/Qwen3-32B")


class Models(http.server.BaseHTTPRequestHandler):
    """/v1/models as Dynamo's frontend answers it, listing `served`."""

    served = ()

    def do_GET(self):
        assert self.path == "/v1/models"
        body = json.dumps({"object": "list", "data": [{"id": m, "object": "object", "created": 0, "owned_by": "nvidia"}
                                                      for m in self.served]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def readiness(*values):
    return container(one(render(SCALE_OUT, *values), "Deployment", "frontend"), "frontend")["readinessProbe"]


def run(probe, port):
    """The probe's command with the frontend's port replaced by the loopback server's."""
    command = [word.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for word in probe["exec"]["command"]]
    return subprocess.run(command, capture_output=True, text=True, timeout=probe["timeoutSeconds"] + 5)


@pytest.mark.parametrize("served,ready", [(MODELS, True), (MODELS + ("other",), True), (MODELS[:1], False),
                                          ((), False)])
def test_ready_only_while_every_groups_model_is_served(served, ready):
    probe = readiness()
    Models.served = served
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = run(probe, server.server_address[1])
    finally:
        server.shutdown()
    assert (done.returncode == 0) is ready, done.stderr
    if not ready:
        named, reason = done.stderr.removeprefix("not serving ").split(" yet: ")
        assert set(named.split(", ")) == set(MODELS) - set(served)
        assert reason.startswith("no worker registered, or the model files did not load"), done.stderr


def test_not_ready_while_the_frontend_does_not_answer():
    assert run(readiness(), servers.free_port()).returncode != 0


def test_its_timing_is_a_value_and_its_check_the_charts():
    probe = readiness({"frontend": {"readinessProbe": {"periodSeconds": 2, "timeoutSeconds": 3}}})
    assert (probe["periodSeconds"], probe["timeoutSeconds"], probe["failureThreshold"]) == (2, 3, 3)
    assert set(probe["exec"]["command"][-2:]) == set(MODELS)
    assert "opener.open(url, timeout=2)" in probe["exec"]["command"][2]

