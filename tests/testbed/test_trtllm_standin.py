"""testbed/trtllm_standin.py as the cluster tests run it in place of `python3 -m dynamo.trtllm`: with the worker
container's arguments, environment and engine.yaml as the chart renders them, under the real Dynamo 0.9.0 runtime
(etcd, NATS, discovery, the request plane, KV events, the frontend), every process in a test host of the test's
own (testbed/by_hand.py). Root is required."""

import json
import re
import subprocess
import urllib.error
import urllib.request

import pytest

from testbed import by_hand, model_files
from testbed.by_hand import MODEL, STANDIN

SYSTEM_PORTS = (8081, 8082)
REQUEST_TIMEOUT = 20.0
REPEATS = 8
# A prompt of several KV blocks (32 tokens each): about 800 tokens with the chat template.
LONG_PROMPT = " ".join(f"word{i}" for i in range(150))
SERVED = re.compile(r"request (\S+) served by worker (\d+)")


@pytest.fixture(scope="module")
def dynamo_python():
    return by_hand.python(by_hand.chart_worker()[2])


RELEASES = {"0.9.0": {}, "1.6.0": {"image": {"tag": "1.6.0"}}}  # runtime image tag -> values


@pytest.fixture
def deployment(tmp_path):
    with by_hand.started(tmp_path) as started:
        yield started


@pytest.fixture(params=RELEASES, ids=lambda tag: f"image-{tag}")
def any_release(request, tmp_path):
    """A deployment of each Dynamo release the chart runs."""
    with by_hand.started(tmp_path, RELEASES[request.param]) as started:
        yield started


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url, body=None, timeout=REQUEST_TIMEOUT):
    """(status, body text), or (None, why) when nothing answers."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with _opener.open(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def listed_models(deployment):
    status, body = http(deployment.url + "/v1/models", timeout=2)
    return [m["id"] for m in json.loads(body)["data"]] if status == 200 else []


def worker_instances(deployment):
    """The worker instances the frontend has discovered (its /health lists them)."""
    status, body = http(deployment.url + "/health", timeout=2)
    if status != 200:
        return set()
    return {i["instance_id"] for i in json.loads(body).get("instances", [])
            if i["endpoint"] == "generate" and i["component"] != "kv-router"}  # the KV router registers too


def chat(deployment, content, max_tokens=8, stream=False):
    status, body = http(deployment.url + "/v1/chat/completions",
                        {"model": MODEL, "messages": [{"role": "user", "content": content}],
                         "max_tokens": max_tokens, "stream": stream})
    assert status == 200, body
    return body


def served_by(deployment, workers, response):
    """The worker id that served a chat completion, from the stand-ins' logs: the request id the worker logs is
    the completion's id without its chatcmpl- prefix."""
    request_id = json.loads(response)["id"].removeprefix("chatcmpl-")

    def find():
        for worker in workers:
            for match in SERVED.finditer(worker.log.read_text(errors="replace")):
                if match[1] == request_id:
                    return int(match[2])
        return None

    return deployment.wait_for(f"the log line of request {request_id}", find, timeout=5)


def test_serves_the_chart_worker_through_the_real_frontend(any_release):
    """With the chart's arguments, environment and engine.yaml: the worker's /health is 503 until the model is
    registered, then 200; the frontend lists the model and serves chat completions, plain and streamed."""
    deployment = any_release
    deployment.frontend("round-robin")
    worker = deployment.worker("worker", SYSTEM_PORTS[0])
    health = deployment.system_url(SYSTEM_PORTS[0]) + "/health"
    answers = []

    def healthy():
        status, _ = http(health, timeout=2)
        if status is not None and (not answers or answers[-1] != status):
            answers.append(status)
        return status == 200

    deployment.wait_for("healthy worker", healthy)
    assert answers == [503, 200]
    log = worker.log.read_text()
    assert "dynamo.trtllm stand-in (TensorRT-LLM cannot run here" in log.splitlines()[0]
    assert f"registered {MODEL} at {deployment.model_path}" in log

    deployment.wait_for("the model on /v1/models", lambda: MODEL in listed_models(deployment))
    deployment.wait_for("the worker at the frontend", lambda: worker_instances(deployment))
    answer = json.loads(chat(deployment, "hello there", max_tokens=8))
    choice = answer["choices"][0]
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 8

    stream = chat(deployment, "hello again", max_tokens=5, stream=True)
    events = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).strip()
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_an_idle_worker_stays_healthy_by_answering_the_health_check_payload(deployment):
    """With Dynamo's canary health check on, an idle endpoint is sent TrtllmHealthCheckPayload (the model's bos
    token, one token to generate) every DYN_CANARY_WAIT_TIME seconds and is ready only while it answers; the
    stand-in answers it."""
    worker = deployment.worker("worker", SYSTEM_PORTS[0], env={"DYN_HEALTH_CHECK_ENABLED": "true",
                                                               "DYN_CANARY_WAIT_TIME": "1"})
    canary = re.compile(r"served by worker \d+: 1 prompt tokens \(0 cached\), 1 to generate")
    # The first canary may find no instance yet (Dynamo marks the endpoint not ready until the next one).
    deployment.wait_for("two answered health checks", lambda: len(canary.findall(worker.log.read_text())) >= 2)
    assert http(deployment.system_url(SYSTEM_PORTS[0]) + "/health")[0] == 200


@pytest.mark.parametrize("tag,flag,code,error", [
    ("0.9.0", "--publish-kv-events", 2, "error: unrecognized arguments: --publish-kv-events"),
    ("0.9.0", "--publish-metrics", 2, "error: unrecognized arguments: --publish-metrics"),
    ("1.6.0", "--store-kv=etcd", 1, "Unrecognized argument: --store-kv=etcd"),
])
def test_refuses_a_flag_its_dynamo_release_does_not_know(tmp_path, tag, flag, code, error):
    """Each release's own parser refuses what it does not know before anything starts: 1.x's flags make 0.9.0's
    exit 2 (argparse), 0.9.0's --store-kv makes 1.6.1's exit 1 (its parser of dynamic flags). (`--model`, 1.x's
    name of --model-path, is no such flag for 0.9.0: argparse takes it as an abbreviation of --model-path.)"""
    model = model_files.write_model(tmp_path / "model")
    python = by_hand.python(by_hand.chart_worker({"image": {"tag": tag}})[2])
    run = subprocess.run([python, str(STANDIN), f"--model-path={model}", f"--served-model-name={MODEL}", flag],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == code, run.stderr
    assert error in run.stderr


@pytest.mark.parametrize("content, error", [(None, "FileNotFoundError"), ("- a list\n", "TypeError"),
                                            ("", "TypeError")], ids=["missing", "a list", "empty"])
def test_refuses_extra_engine_args_that_trtllm_cannot_read(tmp_path, dynamo_python, content, error):
    """--extra-engine-args as TensorRT-LLM reads it: a missing file or a YAML document that is not a mapping fails
    the worker."""
    model = model_files.write_model(tmp_path / "model")
    engine = tmp_path / "engine.yaml"
    if content is not None:
        engine.write_text(content)
    run = subprocess.run([dynamo_python, str(STANDIN), f"--model-path={model}", f"--extra-engine-args={engine}"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert error in run.stderr


def two_workers(deployment, router_mode, args=None):
    """A frontend with this router mode and two stand-ins publishing KV events and metrics (with `args`, by
    default the chart's), both healthy and discovered by the frontend; returns the stand-ins' processes."""
    deployment.frontend(router_mode)
    workers = [deployment.worker(f"worker{i}", port, "--publish-events-and-metrics", args=args)
               for i, port in enumerate(SYSTEM_PORTS)]
    for port in SYSTEM_PORTS:
        health = deployment.system_url(port) + "/health"
        deployment.wait_for(f"healthy worker on {port}", lambda h=health: http(h, timeout=2)[0] == 200)
    deployment.wait_for("both workers at the frontend", lambda: len(worker_instances(deployment)) == 2)
    deployment.wait_for("the model on /v1/models", lambda: MODEL in listed_models(deployment))
    return workers


def test_kv_router_sends_a_repeated_prompt_to_the_worker_that_cached_it(deployment):
    """The stand-ins' KV events tell the frontend's KV router which worker holds a prompt's blocks: once served,
    a long prompt keeps going to that worker (without the events the router spreads it by load)."""
    workers = two_workers(deployment, "kv")
    first = served_by(deployment, workers, chat(deployment, LONG_PROMPT, max_tokens=4))
    repeats = [served_by(deployment, workers, chat(deployment, LONG_PROMPT, max_tokens=4)) for _ in range(REPEATS)]
    assert repeats == [first] * REPEATS
    line = re.compile(rf"served by worker {first}: \d+ prompt tokens \((\d+) cached")
    cached = [int(n) for w in workers for n in line.findall(w.log.read_text())]
    assert cached[0] == 0 and all(cached[1:]), cached  # the worker reports the blocks it reused, as TRT-LLM does


def test_round_robin_alternates_a_repeated_prompt(deployment):
    """The same prompt with --router-mode=round-robin goes to each worker in turn, KV events or not."""
    workers = two_workers(deployment, "round-robin")
    served = [served_by(deployment, workers, chat(deployment, LONG_PROMPT, max_tokens=4)) for _ in range(REPEATS)]
    assert len(set(served)) == 2
    assert all(a != b for a, b in zip(served, served[1:], strict=False)), served


@pytest.mark.parametrize("by_chart", [True, False], ids=["the-charts-kv-block-size", "dynamos-default"])
def test_kv_events_reach_the_router_only_in_the_engines_block_size(tmp_path, by_chart):
    """An engine of 64-token blocks: with the chart's --kv-block-size (the engine's tokens_per_block) the router
    learns which worker holds a prompt; with Dynamo's default of 32, dynamo.trtllm drops every cached block as too
    large (publisher.py), and the router never sees a cached block."""
    values = {"worker": {"engine": {"kv_cache_config": {"tokens_per_block": 64}}}}
    with by_hand.started(tmp_path, values) as deployment:
        assert "--kv-block-size=64" in deployment.args
        args = deployment.args if by_chart else [a for a in deployment.args if not a.startswith("--kv-block-size")]
        workers = two_workers(deployment, "kv", args)
        first = served_by(deployment, workers, chat(deployment, LONG_PROMPT, max_tokens=4))
        repeats = [served_by(deployment, workers, chat(deployment, LONG_PROMPT, max_tokens=4)) for _ in range(4)]
        routed = [int(n) for n in re.findall(r"Selected worker: .*, cached blocks: (\d+)",
                                             (tmp_path / "frontend.log").read_text())]
        assert len(routed) == 5, routed
        if by_chart:
            assert repeats == [first] * 4 and all(routed[1:]), routed
        else:
            assert not any(routed), routed
            assert "which is greater than kv_block_size 32" in "".join(w.log.read_text() for w in workers)
