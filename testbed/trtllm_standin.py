"""Stand-in for `python3 -m dynamo.trtllm` where TensorRT-LLM cannot run (no GPU, no TensorRT-LLM), for Dynamo 0.9.0 and
1.6.1: the cluster tests run the chart's worker containers with it in the real Dynamo runtime.

    <dynamo venv>/bin/python testbed/trtllm_standin.py <the arguments of python3 -m dynamo.trtllm>

Everything but the engine is Dynamo's own, as the release in the venv does it (Release09, Release16): the arguments
are parsed by its own parser (a flag it does not know fails the worker as it would), and the worker does for the
runtime what dynamo/trtllm's worker does: the same DistributedRuntime, endpoint, model registration with the same
arguments and runtime config, TrtllmHealthCheckPayload as health check, and, when it publishes KV events and
metrics, those of dynamo/trtllm/publisher.py. The engine is trivial and deterministic: it answers each request with
tokens of the tokenizer's ordinary vocabulary, never a special one, as many as stop_conditions.max_tokens asks
(DEFAULT_MAX_TOKENS without), and logs one line per request naming the worker (its connection id) that served it.

What it does not do: disaggregated prefill/decode (it registers as the mode asks, but always generates), evicting
blocks (its cache only grows, so no "removed" events), caching generated tokens, TensorRT-LLM's own Prometheus
metrics, --dump-config-to, KVBM and its event consolidator (the events go straight to the publisher, as
publisher.py publishes them without a consolidator). With Dynamo's canary health check on (DYN_HEALTH_CHECK_ENABLED),
the health-check payload reaches the engine like any request and is answered; off (the default), /health is 200
once the endpoint serves.

It imports nothing from the project: it runs with the Dynamo venv's interpreter, stdlib and that venv only.
"""

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import signal
import sys
import types

DEFAULT_MAX_TOKENS = 16  # a request without stop_conditions.max_tokens
WORD_TOKENS_MIN = 8  # fewer tokens that decode to " <letters>" than this: any ordinary token will do


def build_config_defaults():
    """STAND-IN for TensorRT-LLM's build limits, a pydantic model whose field defaults dynamo.trtllm's parser reads
    (model_fields[name].default) for its --max-* flags: max_seq_len None, max_batch_size 2048, max_beam_width 1,
    max_num_tokens 8192, as in NVIDIA/TensorRT-LLM's tensorrt_llm/builder.py `class BuildConfig` (read at commit
    008b2b8d; #8330, Oct 2025, made it the pydantic model of 1.3.0rc1, which ai-dynamo[trtllm]==0.9.0 pins) and in
    tensorrt_llm/llmapi/llm_args.py `BaseLlmArgs`, where the fields moved in 1.3.0rc21 (1.6.1 pins rc29)."""
    import pydantic

    class Limits(pydantic.BaseModel):
        max_seq_len: int | None = None
        max_batch_size: int = 2048
        max_beam_width: int = 1
        max_num_tokens: int = 8192

    return Limits


def stub_modules(modules):
    """Put STAND-IN modules {name: {attribute: value}} in sys.modules, each labelled, parents first."""
    for name, attributes in modules.items():
        module = types.ModuleType(name, f"STAND-IN for the test engine: only {', '.join(attributes)}")
        for key, value in attributes.items():
            setattr(module, key, value)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)


def read_extra_engine_args(path):
    """The --extra-engine-args file as TensorRT-LLM's update_llm_args_with_extra_options reads it: open() (a
    missing file raises FileNotFoundError) and yaml.safe_load; what is not a mapping fails with TypeError there
    (`name in document`, `llm_args | document`), and so it does here."""
    import yaml

    with open(path) as f:
        document = yaml.safe_load(f)
    if not isinstance(document, dict):
        raise TypeError(f"{path}: extra engine args must be a YAML mapping, not {type(document).__name__}")
    return document


class TransformersTokenizer:
    """What TensorRT-LLM's tokenizer_factory returns for a Hugging Face model: the tokenizer in `.tokenizer`,
    where TrtllmHealthCheckPayload looks for bos_token_id."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


def load_tokenizer(model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path, local_files_only=True, use_fast=True, padding_side="left",
                                         truncation_side="left")


def ordinary_tokens(tokenizer):
    """The ids the engine answers with: tokens decoding to a space and letters (words of a reply), from the
    tokenizer's ordinary vocabulary; never a special or added token (eos among them)."""
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    ordinary = [i for i in range(len(tokenizer)) if i not in special]
    words = [i for i in ordinary if (text := tokenizer.decode([i])).startswith(" ") and text[1:].isalpha()]
    return words if len(words) >= WORD_TOKENS_MIN else ordinary


def chained_block_hashes(token_ids, block_size):
    """A hash per full block of the prompt, each over its parent's hash and its tokens, as an engine's KV cache
    names its blocks (a block is the same only after the same prefix); signed 64-bit, as KV events carry them."""
    hashes, parent = [], b""
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        block = token_ids[start:start + block_size]
        digest = hashlib.blake2b(parent + json.dumps(block).encode(), digest_size=8).digest()
        hashes.append(int.from_bytes(digest, "big", signed=True))
        parent = digest
    return hashes


class Engine:
    """The trivial engine, with a prefix cache of full blocks per worker (reported as cached tokens, as TensorRT-LLM
    reports reused blocks) and, when a publisher is given, the KV events and load metrics of publisher.py. Its blocks
    hold `block_size` tokens (the engine's kv_cache_config.tokens_per_block); the events are published as
    publisher.py does with Dynamo's `kv_block_size`."""

    def __init__(self, tokenizer, block_size, kv_block_size, worker_id, publish_stored=None, publish_load=None):
        self.tokens = ordinary_tokens(tokenizer)
        self.block_size = block_size
        self.kv_block_size = kv_block_size
        self.worker_id = worker_id
        self.publish_stored = publish_stored  # (token_ids, num_block_tokens, block_hashes, parent_hash)
        self.publish_load_to = publish_load  # (active blocks)
        self.cached = set()  # block hashes this worker holds
        self.active_blocks = 0

    def store_prompt(self, token_ids):
        """The prompt's full blocks enter the cache; the new ones are published as one "stored" event chained to
        the last block already held, as TensorRT-LLM's event stream reports the blocks it caches (publisher.py
        _handle_kv_event: parent_hash, then token_ids, num_block_tokens and block_hashes of full blocks only).
        Returns how many prompt tokens were cached already."""
        hashes = chained_block_hashes(token_ids, self.block_size)
        held = 0
        while held < len(hashes) and hashes[held] in self.cached:
            held += 1
        new = hashes[held:]
        if new:
            self.cached.update(new)
            # publisher.py _handle_kv_event: a block larger than kv_block_size drops the whole event (logged as an
            # error), a smaller one is partial and ends it; the engine's blocks are all of one size.
            if self.block_size > self.kv_block_size:
                logging.error(f"Block {new[0]} contains {self.block_size} tokens, which is greater than kv_block_size "
                              f"{self.kv_block_size}")
            elif self.block_size < self.kv_block_size:
                logging.debug(f"Early stop when block {new[0]} containing {self.block_size} tokens not equal to "
                              f"kv_block_size {self.kv_block_size}")
            elif self.publish_stored is not None:
                self.publish_stored(token_ids[held * self.block_size:len(hashes) * self.block_size],
                                    [self.block_size] * len(new), new, hashes[held - 1] if held else None)
        return held * self.block_size

    def publish_load(self, blocks):
        self.active_blocks += blocks
        if self.publish_load_to is not None:
            self.publish_load_to(self.active_blocks)

    async def generate(self, request, context):
        """Chunks shaped as the trtllm handler yields them (handler_base.py): the new token_ids of each step, and on
        the last one finish_reason and completion_usage."""
        stop = request.get("stop_conditions") or {}
        max_tokens = stop.get("max_tokens") or request.get("max_tokens") or DEFAULT_MAX_TOKENS
        token_ids = list(request.get("token_ids") or [])
        cached = self.store_prompt(token_ids)
        blocks = -(-(len(token_ids) + max_tokens) // self.block_size)
        self.publish_load(blocks)
        logging.info("request %s served by worker %d: %d prompt tokens (%d cached), %d to generate",
                     request.get("id") or context.id(), self.worker_id, len(token_ids), cached, max_tokens)
        start = sum(token_ids) + len(token_ids)
        try:
            for n in range(max_tokens):
                if context.is_stopped() or context.is_killed():
                    return
                out = {"token_ids": [self.tokens[(start + 7 * n) % len(self.tokens)]]}
                if n == max_tokens - 1:
                    out["finish_reason"] = "length"
                    out["completion_usage"] = {
                        "prompt_tokens": len(token_ids),
                        "completion_tokens": max_tokens,
                        "total_tokens": len(token_ids) + max_tokens,
                        "prompt_tokens_details": {"cached_tokens": cached} if cached else None,
                    }
                yield out
                await asyncio.sleep(0)
        finally:
            self.publish_load(-blocks)


class Release09:
    """Dynamo 0.9.0's dynamo/trtllm/main.py worker() and init(), around the engine."""

    def parse(self):
        from dynamo.trtllm.constants import DisaggregationMode

        # trtllm_utils imports BuildConfig from TensorRT-LLM, and DisaggregationMode from handler_base, which imports
        # torch and TensorRT-LLM: the real enum of dynamo.trtllm.constants stands in for that module.
        stub_modules({"tensorrt_llm": {}, "tensorrt_llm.llmapi": {"BuildConfig": build_config_defaults()},
                      "dynamo.trtllm.request_handlers.handler_base": {"DisaggregationMode": DisaggregationMode}})
        from dynamo.trtllm.utils.trtllm_utils import cmd_line_args

        config = cmd_line_args()
        self.config = config
        self.model, self.publishes = config.model_path, config.publish_events_and_metrics
        return config

    async def serve(self, loop, engine_of):
        from dynamo.common.utils.endpoint_types import parse_endpoint_types
        from dynamo.llm import (
            KvEventPublisher,
            ModelInput,
            ModelRuntimeConfig,
            ModelType,
            WorkerMetricsPublisher,
            register_llm,
        )
        from dynamo.runtime import DistributedRuntime
        from dynamo.trtllm.constants import DisaggregationMode
        from dynamo.trtllm.health_check import TrtllmHealthCheckPayload

        config = self.config
        os.environ["DYN_EVENT_PLANE"] = config.event_plane
        enable_nats = config.request_plane == "nats" or (config.event_plane == "nats" and config.use_kv_events)
        runtime = DistributedRuntime(loop, config.store_kv, config.request_plane, enable_nats)

        def shutdown():
            logging.info("Received shutdown signal, shutting down DistributedRuntime")
            runtime.shutdown()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown)
        component = runtime.namespace(config.namespace).component(config.component)
        endpoint = component.endpoint(config.endpoint)
        tokenizer = TransformersTokenizer(load_tokenizer(config.model_path))

        runtime_config = ModelRuntimeConfig()
        runtime_config.max_num_seqs = config.max_batch_size
        runtime_config.max_num_batched_tokens = config.max_num_tokens
        runtime_config.reasoning_parser = config.reasoning_parser
        runtime_config.tool_call_parser = config.tool_call_parser
        runtime_config.enable_local_indexer = config.enable_local_indexer
        if config.disaggregation_mode == DisaggregationMode.PREFILL:
            model_type = ModelType.Prefill
        else:
            model_type = parse_endpoint_types(config.dyn_endpoint_types)
        if config.disaggregation_mode != DisaggregationMode.ENCODE:
            await register_llm(ModelInput.Tokens, model_type, endpoint, config.model_path, config.served_model_name,
                               kv_cache_block_size=config.kv_block_size, migration_limit=config.migration_limit,
                               runtime_config=runtime_config, custom_template_path=config.custom_jinja_template)
            logging.info("registered %s at %s", config.served_model_name, config.model_path)
        health_check_payload = TrtllmHealthCheckPayload(tokenizer=tokenizer).to_dict()
        worker_id = int(endpoint.connection_id())
        if not self.publishes:
            engine = engine_of(tokenizer.tokenizer, worker_id)
            await endpoint.serve_endpoint(engine.generate, health_check_payload=health_check_payload)
            return

        # The load metrics are published as publisher.py does, though 0.9.0's KV router routes without them (it
        # counts the blocks of the requests it routed itself).
        metrics = WorkerMetricsPublisher()
        metrics.publish(None, 0)  # publisher.py: once at start "so that worker can be selected"
        kv_events = KvEventPublisher(component, worker_id, config.kv_block_size, dp_rank=0,
                                     enable_local_indexer=config.enable_local_indexer)
        event_ids = iter(range(1, 1 << 62))
        engine = engine_of(
            tokenizer.tokenizer, worker_id,
            # lora_id 0: TensorRT-LLM's events carry none, publisher.py sends 0
            publish_stored=lambda tokens, sizes, hashes, parent: kv_events.publish_stored(
                next(event_ids), tokens, sizes, hashes, 0, parent),
            publish_load=lambda blocks: metrics.publish(None, blocks))
        await serve_with_metrics(metrics.create_endpoint(component), endpoint, engine, health_check_payload,
                                 [("model", config.served_model_name or config.model_path)])


class Release16:
    """Dynamo 1.6.1's dynamo/trtllm/main.py worker() and workers/llm_worker.py init_llm_worker(), around the
    engine."""

    def parse(self):
        # backend_args imports BuildConfig from TensorRT-LLM, falling back to llm_args.BaseLlmArgs, where the fields
        # moved in the TensorRT-LLM that 1.6.1 pins.
        stub_modules({"tensorrt_llm": {}, "tensorrt_llm.llmapi": {},
                      "tensorrt_llm.llmapi.llm_args": {"BaseLlmArgs": build_config_defaults()}})
        from dynamo.trtllm.args import parse_args

        config = parse_args(sys.argv[1:])
        self.config = config
        self.model, self.publishes = config.model, config.publish_kv_events or config.publish_metrics
        return config

    async def serve(self, loop, engine_of):
        from dynamo.common.configuration.groups.router_args import build_router_config
        from dynamo.common.utils.endpoint_types import parse_endpoint_types
        from dynamo.common.utils.graceful_shutdown import install_signal_handlers
        from dynamo.common.utils.runtime import create_runtime
        from dynamo.llm import (
            KvEventPublisher,
            ModelInput,
            ModelRuntimeConfig,
            WorkerMetricsPublisher,
            WorkerType,
            register_model,
        )
        from dynamo.trtllm.constants import DisaggregationMode
        from dynamo.trtllm.health_check import TrtllmHealthCheckPayload

        config = self.config
        if config.disaggregation_mode != DisaggregationMode.AGGREGATED:
            sys.exit(f"the stand-in serves aggregated workers only, not {config.disaggregation_mode}")
        runtime, loop = create_runtime(discovery_backend=config.discovery_backend,
                                       request_plane=config.request_plane, event_plane=config.event_plane,
                                       response_plane=config.response_plane)
        endpoint = runtime.endpoint(f"{config.namespace}.{config.component}.{config.endpoint}")
        install_signal_handlers(loop, runtime, [endpoint], asyncio.Event())
        tokenizer = TransformersTokenizer(load_tokenizer(config.model))

        runtime_config = ModelRuntimeConfig()
        runtime_config.context_length = config.max_seq_len
        runtime_config.max_num_seqs = config.max_batch_size
        runtime_config.max_num_batched_tokens = config.max_num_tokens
        runtime_config.reasoning_parser = config.dyn_reasoning_parser
        runtime_config.tool_call_parser = config.dyn_tool_call_parser
        runtime_config.enable_local_indexer = config.enable_local_indexer
        runtime_config.kv_event_publishing_enabled = config.publish_kv_events
        await register_model(ModelInput.Tokens, parse_endpoint_types(config.endpoint_types), endpoint, config.model,
                             config.served_model_name, kv_cache_block_size=config.kv_block_size,
                             runtime_config=runtime_config, custom_template_path=config.custom_jinja_template,
                             worker_type=WorkerType.Aggregated, needs=[],
                             router_config=build_router_config(config.router_advertisement))
        logging.info("registered %s at %s", config.served_model_name, config.model)
        health_check_payload = TrtllmHealthCheckPayload(tokenizer=tokenizer).to_dict()
        worker_id = int(endpoint.connection_id())
        if not self.publishes:
            engine = engine_of(tokenizer.tokenizer, worker_id)
            await endpoint.serve_endpoint(engine.generate, health_check_payload=health_check_payload)
            return

        metrics = WorkerMetricsPublisher() if config.publish_metrics else None
        kv_events = KvEventPublisher(endpoint=endpoint, kv_block_size=config.kv_block_size,
                                     enable_local_indexer=config.enable_local_indexer) \
            if config.publish_kv_events else None
        if metrics is not None:
            metrics.publish(0, kv_used_blocks=0)  # publisher.py: once at start, for each rank
        engine = engine_of(
            tokenizer.tokenizer, worker_id,
            publish_stored=None if kv_events is None else (
                lambda tokens, sizes, hashes, parent: kv_events.publish_stored(tokens, sizes, hashes, parent)),
            publish_load=None if metrics is None else (lambda blocks: metrics.publish(0, kv_used_blocks=blocks)))
        name = config.served_model_name or config.model
        await serve_with_metrics(None if metrics is None else metrics.create_endpoint(endpoint), endpoint, engine,
                                 health_check_payload, [("model", name), ("model_name", name)])


async def serve_with_metrics(create_metrics_endpoint, endpoint, engine, health_check_payload, metrics_labels):
    """Serve the engine while the metrics publisher's endpoint is created beside it, as publisher.py does."""

    async def create():
        await create_metrics_endpoint

    task = asyncio.create_task(create()) if create_metrics_endpoint is not None else None
    try:
        await endpoint.serve_endpoint(engine.generate, metrics_labels=metrics_labels,
                                      health_check_payload=health_check_payload)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def worker(release):
    from dynamo.runtime.logging import configure_dynamo_logging

    configure_dynamo_logging()
    config = release.parse()
    logging.info("dynamo.trtllm stand-in (TensorRT-LLM cannot run here; its engine is replaced, the Dynamo "
                 "runtime is real) with config: %s", config)
    engine_args = {"model": str(release.model), "max_num_tokens": config.max_num_tokens,
                   "max_seq_len": config.max_seq_len, "max_beam_width": config.max_beam_width,
                   "max_batch_size": config.max_batch_size}
    if config.extra_engine_args != "":
        engine_args |= read_extra_engine_args(config.extra_engine_args)
    if config.override_engine_args != "":
        try:
            engine_args |= json.loads(config.override_engine_args)
        except json.JSONDecodeError as e:
            logging.error(f"Failed to parse override_engine_args as JSON: {e}")
            sys.exit(1)
    logging.info(f"TensorRT-LLM engine args (the stand-in's engine reads only its block size): {engine_args}")
    # The engine's KV block size: kv_cache_config.tokens_per_block, 32 by default (TensorRT-LLM's KvCacheConfig).
    block_size = (engine_args.get("kv_cache_config") or {}).get("tokens_per_block", 32)

    def engine_of(tokenizer, worker_id, publish_stored=None, publish_load=None):
        return Engine(tokenizer, block_size, config.kv_block_size, worker_id, publish_stored, publish_load)

    await release.serve(asyncio.get_running_loop(), engine_of)


def main():
    # 1.x parses its arguments in dynamo.trtllm.args; 0.9.0 in utils/trtllm_utils.
    release = Release16() if importlib.util.find_spec("dynamo.trtllm.args") else Release09()
    import uvloop

    uvloop.run(worker(release))


if __name__ == "__main__":
    main()
