"""testbed/kvbm_standin.py and the cases it runs with on the GPU machine (testbed/kvbm_cases.py): the chart's
worker arguments, environment and engine config as the stand-in reads them. The GPU run itself is
tests/testbed/test_kvbm_gpu.py."""

import json
import socket
import sys
import threading
import time

import pytest

from testbed import kvbm_cases, kvbm_standin

LINES = sorted(kvbm_cases.ENVIRONMENTS)


@pytest.fixture(scope="module", params=LINES)
def rendered(request):
    return kvbm_cases.case(request.param, {})


@pytest.fixture
def worker_dir(tmp_path, rendered):
    """The engine config and a model directory as the worker container has them."""
    (tmp_path / "engine.yaml").write_text(rendered["engine_yaml"])
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 36, "num_attention_heads": 32,
                                                   "num_key_value_heads": 8, "hidden_size": 4096,
                                                   "torch_dtype": "bfloat16"}))
    return tmp_path


def standin_args(rendered, worker_dir):
    """The stand-in's argv as the start script's `exec python3 -m dynamo.trtllm --model...=... "$@"` passes it."""
    model_flag = rendered["script"].rsplit("exec python3 -m dynamo.trtllm ", 1)[1].split("=", 1)[0]
    args = [arg.replace("/etc/dynamo/engine/engine.yaml", str(worker_dir / "engine.yaml"))
            for arg in rendered["argv"][1:]]
    return [f"{model_flag}={worker_dir / 'model'}", *args]


def test_the_chart_s_model_flag_and_engine_config_reach_the_engine(rendered, worker_dir):
    engine = kvbm_standin.engine_config(kvbm_standin.parse_args(standin_args(rendered, worker_dir)))
    assert engine.connector_module == "kvbm.trtllm_integration.connector"
    assert (engine.scheduler_class, engine.worker_class) == ("DynamoKVBMConnectorLeader", "DynamoKVBMConnectorWorker")
    assert engine.tokens_per_block == 32  # the chart's --kv-block-size
    assert (engine.layers, engine.inner_dim) == (36, 8 * 128)  # head_dim from hidden_size / heads
    assert engine.block_bytes == 36 * 2 * 32 * 1024 * 2
    assert engine.device_blocks == kvbm_standin.DEFAULT_DEVICE_TOKENS // 32


def test_an_engine_config_without_the_kvbm_connector_is_refused(rendered, worker_dir):
    (worker_dir / "engine.yaml").write_text("backend: pytorch\n")
    with pytest.raises(SystemExit, match="no kv_connector_config"):
        kvbm_standin.engine_config(kvbm_standin.parse_args(standin_args(rendered, worker_dir)))


def test_kv_cache_config_overrides_the_block_size_and_sizes_the_device_cache(rendered, worker_dir):
    engine_yaml = worker_dir / "engine.yaml"
    engine_yaml.write_text(engine_yaml.read_text().replace("kv_cache_config:\n",
                                                           "kv_cache_config:\n  tokens_per_block: 64\n"
                                                           "  max_tokens: 4096\n"))
    engine = kvbm_standin.engine_config(kvbm_standin.parse_args(standin_args(rendered, worker_dir)))
    assert (engine.tokens_per_block, engine.device_blocks) == (64, 64)


def test_the_stand_in_provides_what_the_connector_imports_of_tensorrt_llm(monkeypatch):
    """Both lines' import paths of TensorRT-LLM's connector base classes (1.6.1's moved to connectors/)."""
    for name in list(sys.modules):
        if name.startswith("tensorrt_llm"):
            monkeypatch.delitem(sys.modules, name)
    kvbm_standin.stub_tensorrt_llm()
    from tensorrt_llm._torch.pyexecutor.connectors.kv_cache_connector import KvCacheConnectorWorker  # noqa: F401
    from tensorrt_llm._torch.pyexecutor.kv_cache_connector import KvCacheConnectorScheduler, SchedulerOutput
    from tensorrt_llm.bindings.internal.batch_manager import LlmRequest  # noqa: F401
    from tensorrt_llm.llmapi.llm_args import TorchLlmArgs

    args = TorchLlmArgs(32)
    assert args.parallel_config.to_mapping().world_size == 1
    assert KvCacheConnectorScheduler(args)._llm_args is args
    assert SchedulerOutput().new_requests == []
    for name in list(sys.modules):
        if name.startswith("tensorrt_llm"):
            del sys.modules[name]


def test_cases_carry_the_worker_environment_as_the_kubelet_expands_it(rendered):
    env = rendered["env"]
    pod = "dynamo-dynamo-offloading-worker-0"
    assert env["POD_NAME"] == pod
    assert env["DYN_KVBM_DISK_CACHE_DIR"] == f"{rendered['mountpoint']}/kvbm_cache/{kvbm_cases.NAMESPACE}/{pod}"
    assert "$(" not in json.dumps(env)
    assert rendered["script"].startswith(kvbm_cases.HANDOFF_LINE)
    assert rendered["shell"] == ["/bin/sh", "-ec"]
    assert rendered["argv"][0] == "worker"  # $0 of the script; the rest are "$@"


def test_each_case_layers_its_values_on_the_seed_s_cluster():
    tiers = kvbm_cases.case("0.9.0", kvbm_cases.CASES["tiers"])
    assert tiers["env"]["DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER"] == "true"
    assert (tiers["env"]["DYN_KVBM_CPU_CACHE_GB"], tiers["env"]["DYN_KVBM_DISK_CACHE_GB"]) == ("1", "2")
    sparse = kvbm_cases.case("0.9.0", kvbm_cases.CASES["start-sparse"])
    assert "DYN_KVBM_DISK_ZEROFILL_FALLBACK" not in sparse["env"]
    assert sparse["env"]["DYN_KVBM_DISK_CACHE_GB"] == "50"


def test_the_run_knows_which_line_s_disk_tier_the_chart_refuses_without_gpudirect_storage():
    """The GPU run then checks the refusal's reason (stale KV from disk) instead of failing on it: 0.9's disk tier
    everywhere, 1.6's only on a host directory (its comparison run), not on 3FS."""
    assert kvbm_cases.refuses_disk_without_gds("0.9.0", "3fs") and kvbm_cases.refuses_disk_without_gds("0.9.0", "local")
    assert not kvbm_cases.refuses_disk_without_gds("1.6.1", "3fs")
    assert kvbm_cases.refuses_disk_without_gds("1.6.1", "local")


def test_a_request_s_block_hashes_name_its_full_blocks_by_their_prefix():
    """KVBM 1.6 takes one hash per full block of the request (it panics on any other count) and publishes the
    blocks under them, so a block's hash must depend on everything before it, as TensorRT-LLM's chain does."""
    prompt = list(range(100))
    hashes = kvbm_standin.event_block_hashes(prompt, 32)
    assert len(hashes) == 3  # the 4 tokens past the third block fill no block
    assert all(0 <= h < 1 << 63 for h in hashes)
    assert len(set(hashes)) == 3
    other_first_block = [7] * 32 + prompt[32:]
    assert kvbm_standin.event_block_hashes(other_first_block, 32)[1] != hashes[1]
    assert kvbm_standin.event_block_hashes(prompt[:64], 32) == hashes[:2]


class PanicException(BaseException):
    """Named as pyo3 names a Rust panic raised into Python, which derives from BaseException."""


class Engine:
    def prefill(self, tokens):
        raise PanicException("slot_manager not initialized")


def ask(path, request, timeout=5):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall((json.dumps(request) + "\n").encode())
        return json.loads(conn.makefile("r").readline())


def serving(tmp_path, engine):
    """The stand-in's socket answering for `engine`, started as main() starts it: the socket's path."""
    path = tmp_path / "standin.sock"
    ready = threading.Event()
    ready.error = None
    kvbm_standin.serve(str(path), [engine], ready)
    ready.set()
    return path


def test_a_kvbm_panic_while_serving_reaches_the_caller_as_an_error(tmp_path):
    path = serving(tmp_path, Engine())
    assert ask(path, {"op": "prefill", "tokens": [1, 2, 3]}) == {
        "error": "PanicException: slot_manager not initialized"}
    # the engine is still served
    assert ask(path, {"op": "nothing"}) == {"error": "unknown op 'nothing'"}


def test_a_status_poll_that_gave_up_leaves_no_error_behind(tmp_path, monkeypatch):
    """While KVBM allocates it holds the GIL, so the run's status polls give up before the answer comes."""
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    gil_held = threading.Lock()
    gil_held.acquire()

    class Starting:
        @property
        def timings(self):
            with gil_held:
                return {}

    path = serving(tmp_path, Starting())
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(path))
            conn.sendall(b'{"op": "status"}\n')
    gil_held.release()
    time.sleep(0.5)
    assert failures == []
