"""The `helm test` Pod: gone after the test whatever its outcome, its log shown by Helm, and its request
bounded well inside Helm's own test timeout."""

import http.server
import json
import re
import subprocess
import threading

import pytest

from tests.helm import container, environment_values, one, render

HELM_TEST_TIMEOUT_SECONDS = 300  # `helm test --timeout` default (5m) in Helm 3 and 4


def chat_pod():
    return one(render(environment_values("ipoib")), "Pod", "test-chat-completion")


def test_deleted_after_passing_or_failing():
    """Helm deletes no hook object at uninstall: a Pod kept on failure would outlive the release."""
    annotations = chat_pod()["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == \
        {"before-hook-creation", "hook-succeeded", "hook-failed"}
    # Deleted, so its log is printed by Helm before that, in both cases.
    assert set(annotations["helm.sh/hook-output-log-policy"].split(",")) == {"hook-succeeded", "hook-failed"}


def test_request_ends_before_helm_gives_up():
    script = container(chat_pod(), "chat-completion")["args"][0]
    total = int(re.search(r"curl .*-m (\d+) ", script).group(1))
    connect = int(re.search(r"--connect-timeout (\d+) ", script).group(1))
    assert connect < total <= HELM_TEST_TIMEOUT_SECONDS / 2


class Frontend(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for the frontend that serves only the models in `served`; a stream ends with
    `data: [DONE]` unless `truncated`."""

    served = ()
    asked = []
    truncated = False

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.asked.append((request["model"], bool(request.get("stream"))))
        ok = request["model"] in self.served
        if not ok:
            body = json.dumps({"error": "no such model"})
        elif request.get("stream"):
            chunk = json.dumps({"choices": [{"delta": {"content": "hello"}}]})
            body = f"data: {chunk}\r\n\r\n" + ("" if self.truncated else "data: [DONE]\r\n\r\n")
        else:
            body = json.dumps({"choices": [{"message": {"content": "hello"}}]})
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("served,truncated,passes", [
    (("Qwen/Qwen3-8B", "Qwen/Qwen3-32B"), False, True),
    (("Qwen/Qwen3-8B",), False, False),
    (("Qwen/Qwen3-8B", "Qwen/Qwen3-32B"), True, False)])
def test_every_groups_model_gets_a_completion_and_a_whole_stream(served, truncated, passes):
    script = container(one(render(environment_values("scale-out")), "Pod", "test-chat-completion"),
                       "chat-completion")["args"][0]
    Frontend.served, Frontend.asked, Frontend.truncated = served, [], truncated
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Frontend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = re.sub(r'url="http://[^/]+/', f'url="http://127.0.0.1:{server.server_address[1]}/', script)
        done = subprocess.run(["sh", "-c", local], capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert (done.returncode == 0) is passes, done.stdout + done.stderr
    if passes:
        assert sorted(Frontend.asked) == sorted((model, stream) for model in served for stream in (False, True))
        assert "streamed chat completion OK: Qwen/Qwen3-32B" in done.stdout
    elif truncated:
        assert "the stream did not end with data: [DONE]" in done.stdout
    else:
        assert "expected HTTP 200" in done.stdout
