"""Stand-in for `python3 -m dynamo.trtllm` with KVBM, on a GPU machine without TensorRT-LLM: it drives the real
KVBM connector as TensorRT-LLM's KV-connector scheduler does, with a torch-allocated GPU cache in TensorRT-LLM's
layout, and answers requests over a UNIX socket so that a test sees every byte that went through the tiers.

    PYTHONPATH=<repository root> KVBM_STANDIN_SOCKET=<path> python3 testbed/kvbm_standin.py <dynamo.trtllm args>

What is real: the `kv_connector_config` of the --extra-engine-args file names the connector module and its
scheduler and worker classes, and those are imported and built as TensorRT-LLM builds them (kvbm's own Python
classes, over its Rust connector), configured only by the environment (DYN_KVBM_*), as in the worker container.
What stands in, labelled STAND-IN below: TensorRT-LLM's objects the connector reads (llm_args, the request, the
scheduler output, the connector base classes), and the model. The model's shape is read from the model
directory's config.json (num_hidden_layers, num_key_value_heads, head_dim, torch_dtype); its "forward pass"
writes, for every block it computes, bytes that depend only on the tokens of the prefix that block ends and on
the layer, so a block onboarded from any tier can be checked byte for byte.

The GPU cache: `[blocks, layers, 2, tokens_per_block * kv_heads * head_dim]`, one tensor, as TensorRT-LLM hands
it to register_kv_caches; tokens_per_block is --kv-block-size unless kv_cache_config.tokens_per_block is set;
the number of blocks is kv_cache_config.max_tokens / tokens_per_block (DEFAULT_DEVICE_TOKENS without). There is
no device prefix reuse: blocks are handed out oldest-freed first and overwritten with POISON when a request gets
them, so what a request does not compute itself must come from KVBM. (Poisoning at allocation, not at the free:
request_finished answers False, no asynchronous save, yet KVBM's copy to the CPU tier may still be reading the
blocks; an engine reuses a freed block only for a later request.)

Requests, one JSON line each way: {"op": "prefill", "tokens": [...]} runs one request through prefill (one
scheduler iteration per step, as TensorRT-LLM: matched tokens, async onboarding, the forward pass with per-layer
saves, request_finished, waiting for its save) and answers what happened; {"op": "status"} answers at once
whether the start is done and, once it is, its timings; {"op": "quit"} ends the process.
"""

import argparse
import dataclasses
import hashlib
import importlib
import json
import math
import os
import socket
import sys
import threading
import time
import types

# stdlib only, as this module: the GPU machine has PyTorch alone
from testbed.trtllm_standin import chained_block_hashes, stub_modules

DEFAULT_DEVICE_TOKENS = 8192
POISON = -21846  # 0xAAAA in every int16 lane of a block a request is given
STEP_TIMEOUT = 60.0  # seconds a request may wait on KVBM (onboarding, saving); under the harness's own wait

TRTLLM_CONNECTOR_MODULES = ("tensorrt_llm._torch.pyexecutor.kv_cache_connector",  # TensorRT-LLM 1.3.0rc1 (0.9.0)
                            "tensorrt_llm._torch.pyexecutor.connectors.kv_cache_connector")  # 1.3.0rc29 (1.6.1)


def parse_args(argv):
    """The flags the chart passes to `python3 -m dynamo.trtllm` that decide the engine here; the rest are Dynamo's
    (served model name, endpoint, ...) and have no bearing on KVBM."""
    parser = argparse.ArgumentParser(prog="python3 -m dynamo.trtllm (KVBM stand-in)")
    parser.add_argument("--model-path", "--model", dest="model_path", required=True)  # 0.9.0 and 1.6.1's names
    parser.add_argument("--extra-engine-args", required=True)
    parser.add_argument("--kv-block-size", type=int, default=32)
    args, _ = parser.parse_known_args(argv)
    return args


@dataclasses.dataclass(frozen=True)
class Engine:
    """What the engine's configuration decides for KVBM."""

    connector_module: str
    scheduler_class: str
    worker_class: str
    tokens_per_block: int
    device_blocks: int
    layers: int
    inner_dim: int  # per token and layer, of K (or V): kv heads * head dim
    dtype: str

    @property
    def block_bytes(self):
        return self.layers * 2 * self.tokens_per_block * self.inner_dim * 2


def engine_config(args):
    """The Engine of these arguments: the --extra-engine-args file (YAML) and the model's config.json."""
    import yaml

    with open(args.extra_engine_args) as f:
        extra = yaml.safe_load(f)
    connector = extra.get("kv_connector_config")
    if not connector:
        raise SystemExit(f"{args.extra_engine_args}: no kv_connector_config, so KVBM is off; this stand-in runs "
                         f"only the KVBM connector")
    kv_cache = extra.get("kv_cache_config") or {}
    tokens_per_block = int(kv_cache.get("tokens_per_block") or args.kv_block_size)
    with open(os.path.join(args.model_path, "config.json")) as f:
        model = json.load(f)
    head_dim = model.get("head_dim") or model["hidden_size"] // model["num_attention_heads"]
    dtype = model.get("torch_dtype", "bfloat16")
    if dtype not in ("bfloat16", "float16"):
        raise SystemExit(f"{args.model_path}/config.json: torch_dtype {dtype}: the stand-in caches 2-byte types only")
    return Engine(connector_module=connector["connector_module"],
                  scheduler_class=connector["connector_scheduler_class"],
                  worker_class=connector["connector_worker_class"],
                  tokens_per_block=tokens_per_block,
                  device_blocks=int(kv_cache.get("max_tokens") or DEFAULT_DEVICE_TOKENS) // tokens_per_block,
                  layers=int(model["num_hidden_layers"]),
                  inner_dim=int(model["num_key_value_heads"]) * int(head_dim),
                  dtype=dtype)


class LlmArgs:
    """STAND-IN for TensorRT-LLM's TorchLlmArgs: what the KVBM connector reads of it (one rank, TP 1)."""

    def __init__(self, tokens_per_block):
        self.kv_cache_config = types.SimpleNamespace(tokens_per_block=tokens_per_block)
        mapping = types.SimpleNamespace(world_size=1, rank=0)
        self.parallel_config = types.SimpleNamespace(to_mapping=lambda: mapping)


class LlmRequest:
    """STAND-IN for TensorRT-LLM's LlmRequest: id, prompt tokens and the context position."""

    def __init__(self, request_id, tokens):
        self.request_id = request_id
        self.tokens = list(tokens)
        self.context_current_position = 0
        self.multimodal_positions = None

    def get_tokens(self, beam):
        return self.tokens


@dataclasses.dataclass
class RequestData:
    """STAND-IN for an entry of TensorRT-LLM's connector SchedulerOutput."""

    request_id: int
    new_tokens: list
    new_block_ids: list
    computed_position: int
    num_scheduled_tokens: int
    priorities: list = None
    # The chain of hashes of the request's full blocks, those its KV cache events report. KVBM 1.6 publishes its
    # blocks under them and panics when their count is not its own count of full blocks; 0.9 reads none.
    block_hashes: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SchedulerOutput:
    """STAND-IN for TensorRT-LLM's connector SchedulerOutput."""

    new_requests: list = dataclasses.field(default_factory=list)
    cached_requests: list = dataclasses.field(default_factory=list)


class KvCacheConnectorScheduler:
    """STAND-IN for TensorRT-LLM's base class of a connector's scheduler half."""

    def __init__(self, llm_args):
        self._llm_args = llm_args


class KvCacheConnectorWorker:
    """STAND-IN for TensorRT-LLM's base class of a connector's worker half."""

    def __init__(self, llm_args):
        self._llm_args = llm_args
        self._metadata = None

    def bind_connector_meta(self, metadata):
        self._metadata = metadata


def stub_tensorrt_llm():
    """STAND-IN modules of TensorRT-LLM, as far as kvbm.trtllm_integration.connector imports them."""
    import logging

    connector = {"KvCacheConnectorScheduler": KvCacheConnectorScheduler,
                 "KvCacheConnectorWorker": KvCacheConnectorWorker, "SchedulerOutput": SchedulerOutput}
    modules = {"tensorrt_llm": {"__version__": "stand-in", "logger": logging.getLogger("tensorrt_llm")},
               "tensorrt_llm._torch": {}, "tensorrt_llm._torch.pyexecutor": {},
               "tensorrt_llm._torch.pyexecutor.connectors": {},
               **{name: connector for name in TRTLLM_CONNECTOR_MODULES},
               "tensorrt_llm.bindings": {}, "tensorrt_llm.bindings.internal": {},
               "tensorrt_llm.bindings.internal.batch_manager": {"LlmRequest": LlmRequest},
               "tensorrt_llm.llmapi": {}, "tensorrt_llm.llmapi.llm_args": {"TorchLlmArgs": LlmArgs}}
    stub_modules(modules)


def block_seed(prefix_tokens, layer):
    digest = hashlib.sha256(f"{layer}:".encode() + b",".join(str(t).encode() for t in prefix_tokens)).digest()
    return int.from_bytes(digest[:4], "little")


class KvbmEngine:
    """The engine loop around the real connector: one GPU cache, one request at a time."""

    def __init__(self, engine, log=print):
        import torch

        self.torch = torch
        self.engine = engine
        self.log = log
        stub_tensorrt_llm()
        module = importlib.import_module(engine.connector_module)
        llm_args = LlmArgs(engine.tokens_per_block)
        started = time.monotonic()
        self.scheduler = getattr(module, engine.scheduler_class)(llm_args)
        self.worker = getattr(module, engine.worker_class)(llm_args)
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.cache = torch.empty((engine.device_blocks, engine.layers, 2, engine.tokens_per_block * engine.inner_dim),
                                 dtype=getattr(torch, engine.dtype), device=self.device)
        self.lanes = self.cache.view(torch.int16)
        self.lanes.fill_(POISON)
        self.free = list(range(engine.device_blocks))
        self.next_id = 1
        self.timings = {"connector_built_s": time.monotonic() - started}
        registering = time.monotonic()
        self.worker.register_kv_caches(self.cache)
        self.timings["register_kv_caches_s"] = time.monotonic() - registering
        self.timings["leader_ready_s"] = self._wait_for_leader(registering)
        self.log(f"KVBM stand-in: {engine.device_blocks} device blocks of {engine.block_bytes} bytes "
                 f"({engine.layers} layers, {engine.tokens_per_block} tokens, inner {engine.inner_dim}); "
                 f"timings {self.timings}")

    def _wait_for_leader(self, since):
        """Seconds from register_kv_caches to the leader's first answer: its slot manager exists only once the
        workers have allocated their tiers, and until then its calls panic. 1.6.1's get_num_new_matched_tokens
        answers before that, but its build_connector_meta, which every scheduler iteration calls, does not."""
        probe = LlmRequest(0, [0] * self.engine.tokens_per_block)
        deadline = time.monotonic() + float(os.environ.get("DYN_KVBM_LEADER_WORKER_INIT_TIMEOUT_SECS", 1800))
        while True:
            try:
                self.scheduler.get_num_new_matched_tokens(probe, 0)
                self._step(SchedulerOutput())
            except BaseException as e:  # pyo3's PanicException derives from BaseException
                if type(e).__name__ != "PanicException" or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            ready = time.monotonic() - since
            try:
                self.scheduler.request_finished(probe, [])
            except BaseException as e:  # the probe holds no blocks; its slot outliving it costs nothing
                self.log(f"KVBM stand-in: finishing the readiness probe: {type(e).__name__}: {e}")
            return ready

    def _pattern(self, seed):
        torch = self.torch
        n = self.lanes.shape[-1] * 2
        lanes = torch.arange(n, dtype=torch.int64, device=self.device) * (seed | 1) + seed
        return ((lanes >> 7) & 0xFFFF).to(torch.int32).sub_(32768).to(torch.int16).view(2, -1)

    def _expected(self, tokens, block):
        end = (block + 1) * self.engine.tokens_per_block
        return [self._pattern(block_seed(tokens[:end], layer)) for layer in range(self.engine.layers)]

    def _forward(self, request, block_ids, start_block):
        """The forward pass: compute (write) every block from start_block on, layer by layer, saving each layer
        after its work is enqueued, as TensorRT-LLM's model engine calls the connector."""
        stream = self.torch.cuda.current_stream(self.device)
        for layer in range(self.engine.layers):
            for i in range(start_block, len(block_ids)):
                self.lanes[block_ids[i], layer].copy_(self._pattern(block_seed(
                    request.tokens[:(i + 1) * self.engine.tokens_per_block], layer)))
            self.worker.save_kv_layer(layer, stream)

    def _step(self, output):
        """One scheduler iteration's connector calls before the forward pass: the leader's metadata for the
        worker, then the worker starts the loads it names."""
        self.worker.bind_connector_meta(self.scheduler.build_connector_meta(output))
        self.worker.start_load_kv(self.torch.cuda.current_stream(self.device))

    def _until(self, what, request_id, finished=(), loading=()):
        """Empty iterations until get_finished names request_id among the saved (what 0) or loaded (1) ids;
        each id is passed to get_finished once, as TensorRT-LLM does."""
        deadline = time.monotonic() + STEP_TIMEOUT
        finished, loading = list(finished), list(loading)
        while request_id not in self.worker.get_finished(finished, loading)[what]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"request {request_id}: KVBM did not report it {('saved', 'loaded')[what]} "
                                   f"within {STEP_TIMEOUT:.0f} s")
            finished, loading = [], []
            time.sleep(0.002)
            self._step(SchedulerOutput())

    def _wrong_blocks(self, tokens, block_ids, count):
        """Indices of the first `count` blocks whose GPU bytes differ from what the forward pass wrote for
        the same prefix, in any layer."""
        self.torch.cuda.synchronize(self.device)
        return [i for i in range(count)
                if not all(self.torch.equal(self.lanes[block_ids[i], layer], expected)
                           for layer, expected in enumerate(self._expected(tokens, i)))]

    def prefill(self, tokens):
        """One request through prefill, as TensorRT-LLM's scheduler drives the connector: matched tokens and
        allocation; an asynchronous onboarding keeps the request out of the batch until get_finished reports
        it loaded; then one iteration computes the rest; request_finished, and the blocks stay allocated
        until get_finished reports them saved."""
        bs = self.engine.tokens_per_block
        request = LlmRequest(self.next_id, tokens)
        self.next_id += 1
        blocks_needed = math.ceil(len(tokens) / bs)
        if blocks_needed > len(self.free):
            raise ValueError(f"{len(tokens)} tokens need {blocks_needed} blocks; {len(self.free)} are free")
        started = time.monotonic()
        matched, is_async = self.scheduler.get_num_new_matched_tokens(request, 0)
        block_ids = [self.free.pop(0) for _ in range(blocks_needed)]
        try:
            return self._prefill(request, block_ids, matched, is_async, started)
        finally:
            self.free.extend(block_ids)

    def _prefill(self, request, block_ids, matched, is_async, started):
        bs = self.engine.tokens_per_block
        tokens = request.tokens
        for block in block_ids:
            self.lanes[block].fill_(POISON)
        self.torch.cuda.synchronize(self.device)  # KVBM's copies run on streams of its own
        request.context_current_position = matched  # device tokens (none: no reuse here) + external ones
        self.scheduler.update_state_after_alloc(request, block_ids)
        if matched and is_async:
            self._step(SchedulerOutput())
            self._until(1, request.request_id, loading=[request.request_id])
        # TensorRT-LLM leaves the connector's tokens out of a request's first scheduler output, unless they were
        # loaded asynchronously in an earlier iteration (kv_cache_connector.py, build_scheduler_output).
        computed = matched if is_async else 0
        new = RequestData(request.request_id, list(tokens), list(block_ids), computed, len(tokens) - matched,
                          block_hashes=event_block_hashes(tokens, bs))
        self._step(SchedulerOutput(new_requests=[new]))
        loaded = matched // bs
        self._forward(request, block_ids, loaded)
        wrong = self._wrong_blocks(tokens, block_ids, loaded)
        prefill_s = time.monotonic() - started
        self.worker.get_finished([], [])
        saving = self.scheduler.request_finished(request, block_ids)
        if saving:
            self._until(0, request.request_id, finished=[request.request_id])
        return {"request_id": request.request_id, "tokens": len(tokens), "matched_tokens": matched,
                "async_load": bool(is_async), "loaded_blocks": loaded, "wrong_blocks": wrong,
                "async_save": bool(saving), "prefill_s": round(prefill_s, 4),
                "total_s": round(time.monotonic() - started, 4)}


def event_block_hashes(tokens, tokens_per_block):
    """The block hashes TensorRT-LLM's KV cache manager gives a request's full blocks: unsigned (size_t), kept
    below 2**63 here so that they convert to a signed as well as an unsigned 64-bit integer."""
    return [h & (1 << 63) - 1 for h in chained_block_hashes(tokens, tokens_per_block)]


def serve(path, engine, ready):
    """Answer JSON-line requests on a UNIX socket; requests run one at a time, after the start."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    server.bind(path)
    server.listen(64)
    lock = threading.Lock()

    def answer(request):
        if ready.error:
            return {"error": ready.error}
        if request["op"] == "status":
            running = engine[0]
            if not ready.is_set():
                return {"ready": False}
            return {"ready": True, "timings": running.timings, "block_bytes": running.engine.block_bytes,
                    "device_blocks": running.engine.device_blocks,
                    "tokens_per_block": running.engine.tokens_per_block}
        ready.wait()
        if ready.error:
            return {"error": ready.error}
        if request["op"] == "prefill":
            with lock:
                return engine[0].prefill(request["tokens"])
        if request["op"] == "quit":
            os._exit(0)
        return {"error": f"unknown op {request['op']!r}"}

    def connection(conn):
        with conn, conn.makefile("r") as lines:
            for line in lines:
                try:
                    reply = answer(json.loads(line))
                except BaseException as e:  # a KVBM panic too (pyo3's PanicException): the caller learns of it
                    reply = {"error": f"{type(e).__name__}: {e}"}
                try:
                    conn.sendall((json.dumps(reply) + "\n").encode())
                except (BrokenPipeError, ConnectionResetError):  # a status poll that stopped waiting
                    return

    def accept():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=connection, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    engine = engine_config(args)
    holder, ready = [None], threading.Event()
    ready.error = None
    path = os.environ.get("KVBM_STANDIN_SOCKET")
    if path:
        serve(path, holder, ready)
    try:
        holder[0] = KvbmEngine(engine, log=lambda line: print(line, flush=True))
    except BaseException as e:
        ready.error = f"{type(e).__name__}: {e}"
        ready.set()
        raise
    ready.set()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
