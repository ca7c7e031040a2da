"""`make kvbm-gpu`: the chart's worker environment driving the real KVBM on a GPU machine, for each release line,
with the disk tier on a disk-backed FUSE filesystem that has no fallocate, as 3FS's client (testbed/fusefs.py),
mounted as fuse.hf3fs where the chart's 3FS mount is. Prints a table and exits non-zero on any wrong result.

    python3 -m testbed.kvbm_gpu [--out DIR] [VERSION ...]

It needs build/kvbm-gpu/ from `make kvbm-bundle` (KVBM's wheels packed per line, fusepy and libfuse2, and the
cases rendered from the chart, testbed/kvbm_cases.py), a CUDA GPU, PyTorch, root and /dev/fuse; nothing else
is installed. Each worker runs as the pod would: the rendered start script from the resolve step's answer on,
with the rendered environment, its `python3 -m dynamo.trtllm` the KVBM stand-in (testbed/kvbm_standin.py).
Paths are the container's own (/run/dynamo-offloading, /etc/dynamo/engine, the 3FS mountpoint): the GPU
machine is a scratch machine.

What runs, per line:
- start: the tiers allocated from the rendered values; register_kv_caches and the leader's first answer timed,
  for kvbm.diskAllocation sparse (the rendered 20 GB CPU and 50 GB disk tiers) and zerofill (4 GB each: the
  rate is what counts), with the zero-fill rate measured from the cache file's growth;
- crash: the worker killed during zero-fill leaves its cache file; the next start's sweep removes it;
- tiers: a prefix computed on the GPU, offloaded to CPU and disk, onboarded from the CPU tier and, after the CPU
  tier has evicted it, from disk; every onboarded block compared byte for byte, and KVBM's metrics checked
  against what happened; the same on a local directory for comparison;
- filter: the disk offload filter (on by default) and the chart's value that turns it off;
- switches: each presence-tested variable set to "false", to see what it does.
"""

import argparse
import glob
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request

from testbed import fusefs
from testbed.engine_shim import python_shims

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "build" / "kvbm-gpu"
WORK = pathlib.Path("/var/tmp/kvbm-gpu")
SOCKET = WORK / "engine.sock"
STANDIN = ROOT / "testbed" / "kvbm_standin.py"
MODEL_DIR = WORK / "model"
# Qwen/Qwen3-8B's config.json (the seed's model), as far as the KV cache's shape goes: 36 layers, 8 KV heads of
# 128, bfloat16, so 4.7 MB a 32-token block.
MODEL_CONFIG = {"architectures": ["Qwen3ForCausalLM"], "num_hidden_layers": 36, "num_attention_heads": 32,
                "num_key_value_heads": 8, "head_dim": 128, "hidden_size": 4096, "torch_dtype": "bfloat16"}
START_TIMEOUT = 150.0  # a start of the small tiers here takes well under a minute
REQUEST_TIMEOUT = 90.0
CACHE_FILE = "dynamo-kvbm-disk-cache-"
MACHINE_LD_PATH = os.environ.get("LD_LIBRARY_PATH", "")
TRANSFER_ERRORS = ("no specified or potential backend", "Failed to create XferRequest", "Failed to write to blocks")
HIDDEN = ".fuse_hidden"


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def unpack(version):
    """The line's KVBM tree and the FUSE bundle, unpacked under WORK; the environment that loads them."""
    site = WORK / f"site-{version}"
    fuse = WORK / "fuse"
    for archive, target in ((BUNDLE / f"kvbm-{version}.tar.xz", site), (BUNDLE / "fuse.tar.xz", fuse)):
        if not target.exists():
            check(archive.exists(), f"{archive} is missing: run `make kvbm-bundle` where pip works, then carry "
                                    f"build/kvbm-gpu")
            with tarfile.open(archive) as tar:
                tar.extractall(target.with_suffix(".partial"), filter="tar")
            target.with_suffix(".partial").rename(target)
    libs = sorted(glob.glob(str(site / "nvidia" / "*" / "lib")))
    return {"PYTHONPATH": os.pathsep.join([str(site), str(fuse), str(ROOT)]),
            "LD_LIBRARY_PATH": os.pathsep.join(libs + [p for p in MACHINE_LD_PATH.split(os.pathsep) if p]),
            **fuse_env(fuse)}


def fuse_env(fuse):
    """What the tests' FUSE daemon needs to load fusepy and libfuse2 from the bundle."""
    return {"FUSE_LIBRARY_PATH": str(fuse / "lib" / "libfuse.so.2")}


def exposition(port):
    """KVBM's metrics endpoint, as Prometheus scrapes it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def samples(text):
    """KVBM's kvbm_* samples of an exposition, by name."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(kvbm_[a-z0-9_]+)(?:\{[^}]*\})? (\S+)$", text, re.M)}


def cache_file_flags(pid):
    """The open flags of the process's disk-tier file descriptors, from /proc/PID/fdinfo: KVBM sets O_DIRECT with
    fcntl(F_SETFL) after mkostemp, which the filesystem never sees."""
    flags = []
    for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if CACHE_FILE in target or HIDDEN in target:
                info = (pathlib.Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
                flags.append(int(re.search(r"^flags:\s+(\d+)", info, re.M).group(1), 8))
        except (FileNotFoundError, AttributeError):
            continue
    return flags


def cache_files(directory):
    """(name, size, bytes allocated) of KVBM's cache files under `directory`, hidden (unlinked, open) ones too."""
    found = []
    for path in pathlib.Path(directory).glob("*"):
        if path.name.startswith((CACHE_FILE, HIDDEN)):
            st = path.stat()
            found.append((path.name, st.st_size, st.st_blocks * 512))
    return found


class Disk:
    """The 3FS stand-in: a disk-backed FUSE mount at the chart's mountpoint (or, local, a plain directory)."""

    def __init__(self, case, backing, local=False):
        self.case, self.backing, self.local = case, pathlib.Path(backing), local
        self.server = None

    def __enter__(self):
        shutil.rmtree(self.backing, ignore_errors=True)
        self.backing.mkdir(parents=True)
        if not self.local:
            os.environ.update(fuse_env(WORK / "fuse"))
            os.environ["PYTHONPATH"] = str(WORK / "fuse")
            self.server = fusefs.FuseServer(self.case["mountpoint"], subtype="hf3fs", fsname=self.case["fsname"],
                                            backing=self.backing).start()
        return self

    def cache_dir(self, env):
        """Where the disk tier's file lands, seen from the backing directory."""
        return self.backing / os.path.relpath(env["DYN_KVBM_DISK_CACHE_DIR"], self.case["mountpoint"])

    def __exit__(self, *exc):
        if self.server:
            subprocess.run(["umount", "-l", self.case["mountpoint"]], check=False)
            self.server.kill()


class Worker:
    """One start of the worker container: the rendered start script (or, local, the stand-in alone)."""

    def __init__(self, case, runtime_env, log, changes=None, local_dir=None):
        self.case = case
        self.env = {k: v for k, v in {**case["env"], **(changes or {})}.items() if v is not None}
        if local_dir:
            self.env["DYN_KVBM_DISK_CACHE_DIR"] = str(local_dir)
        self.local = local_dir is not None
        self.runtime_env = runtime_env
        self.log = log
        self.process = None

    def start(self):
        engine_dir, handoff = pathlib.Path(self.case["engine_dir"]), pathlib.Path(self.case["handoff_dir"])
        local_dirs = [pathlib.Path(self.env["DYN_KVBM_DISK_CACHE_DIR"])] if self.local else []
        for directory in (engine_dir, handoff, MODEL_DIR, *local_dirs):
            directory.mkdir(parents=True, exist_ok=True)
        (engine_dir / "engine.yaml").write_text(self.case["engine_yaml"])
        (MODEL_DIR / "config.json").write_text(json.dumps(MODEL_CONFIG))
        (handoff / "worker.env").write_text(f"MODEL_PATH={MODEL_DIR}\nexport MODEL_PATH\n")
        if SOCKET.exists():
            SOCKET.unlink()
        shims = python_shims(WORK / "bin", shutil.which("python3"), STANDIN)
        env = {"PATH": f"{shims}:{os.environ['PATH']}", "HOME": "/root", **self.runtime_env, **self.env,
               "KVBM_STANDIN_SOCKET": str(SOCKET), "PYTHONUNBUFFERED": "1"}
        if self.local:
            argv = [shutil.which("python3"), str(STANDIN), f"--model-path={MODEL_DIR}",
                    *self.case["argv"][1:]]
        else:
            argv = [*self.case["shell"], self.case["script"], *self.case["argv"]]
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self

    def ask(self, request, timeout=REQUEST_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not SOCKET.exists():
            check(self.process.poll() is None, f"the worker exited with {self.process.returncode} before serving")
            check(time.monotonic() < deadline, "the worker did not open its socket")
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(SOCKET))
            conn.sendall((json.dumps(request) + "\n").encode())
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = conn.recv(65536)
                check(chunk, f"the worker closed the connection answering {request['op']}")
                reply += chunk
        answer = json.loads(reply)
        check("error" not in answer, f"{request['op']}: {answer.get('error')}")
        return answer

    def exposition(self):
        return exposition(self.env["DYN_KVBM_METRICS_PORT"])

    def metrics(self):
        return samples(self.exposition())

    def kill(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()


def prompt(seed, blocks, extra=5, tokens_per_block=32):
    """A prompt of `blocks` full blocks and `extra` tokens, distinct per seed."""
    return [(seed * 7919 + i) % 150000 + 1 for i in range(blocks * tokens_per_block + extra)]


def delta(after, before, name):
    return after.get(name, 0) - before.get(name, 0)


class Run:
    """One release line's run: its rows for the table and the evidence for its log."""

    def __init__(self, version, cases, out):
        self.version = version
        self.line = cases[version]
        self.cases = self.line["cases"]
        self.out = out
        self.runtime_env = unpack(version)
        self.rows = []
        self.failures = []
        self.log_path = out / f"worker-{version}.log"
        self.log = open(self.log_path, "ab")

    def row(self, check_name, result, ok=True, detail=""):
        self.rows.append((self.version, check_name, result, "ok" if ok else "WRONG", detail))
        print(" | ".join(str(c) for c in self.rows[-1]), file=sys.stderr, flush=True)
        if not ok:
            self.failures.append(f"{self.version} {check_name}: {result} {detail}")

    def note(self, text):
        self.log.write(f"\n=== {self.version}: {text}\n".encode())
        self.log.flush()
        self.log_mark = self.log.tell()

    def transfer_errors(self):
        """KVBM's and NIXL's transfer errors logged since the last note, each once."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_mark)
            lines = f.read().decode(errors="replace").splitlines()
        found = [re.sub(r"^\S+ +", "", line).strip() for line in lines
                 if any(error in line for error in TRANSFER_ERRORS)]
        return list(dict.fromkeys(found))

    def watch_allocation(self, worker, cache_dir, stop_at=None, ignore=()):
        """Poll the cache file until the leader answers (or, stop_at, until that many bytes are allocated):
        (first, last, size, allocated, status): when the file's allocated bytes were first seen and last seen
        growing (KVBM's zero-fill appends, so the size grows with them), its last size and allocated bytes,
        and the engine's status (None with stop_at)."""
        first = last = None
        size = allocated = 0
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            check(worker.process.poll() is None, f"the worker exited with {worker.process.returncode} while starting")
            files = [f for f in cache_files(cache_dir) if f[0] not in ignore] if cache_dir.exists() else []
            if files:
                _, size, now_allocated = max(files, key=lambda f: f[2])
                if now_allocated > allocated:
                    first = first or time.monotonic()
                    last = time.monotonic()
                allocated = now_allocated
            if stop_at is not None and allocated >= stop_at:
                return first, last, size, allocated, None
            if stop_at is None and SOCKET.exists():
                try:
                    status = worker.ask({"op": "status"}, timeout=0.2)
                except (TimeoutError, BlockingIOError):  # KVBM holds the GIL while it allocates: no answer yet
                    status = {"ready": False}
                if status["ready"]:
                    return first, last, size, allocated, status
            time.sleep(0.05)
        raise Failed("the worker did not finish starting")

    def start(self, name, backing):
        case = self.cases[name]
        self.note(f"start {name}")
        with Disk(case, backing) as disk, Worker(case, self.runtime_env, self.log) as worker:
            first, last, size, allocated, status = self.watch_allocation(worker, disk.cache_dir(worker.env))
        timings = status["timings"]
        gb = float(case["env"]["DYN_KVBM_DISK_CACHE_GB"])
        zerofill = "DYN_KVBM_DISK_ZEROFILL_FALLBACK" in case["env"]
        detail = (f"CPU {case['env']['DYN_KVBM_CPU_CACHE_GB']} GB, disk {gb:g} GB; register_kv_caches "
                  f"{timings['register_kv_caches_s']:.1f} s, leader ready at {timings['leader_ready_s']:.1f} s")
        if zerofill:
            check(first and last and last > first, f"{name}: the zero-fill was not seen growing (allocated "
                                                    f"{allocated} of {size})")
            rate = allocated / 1e9 / ((last - first) / 60)
            chart_rate = float(self.line["startup"]["diskWriteGBPerMinute"])
            self.row(f"start {name}", f"{rate:.1f} GB/min zero-fill", allocated >= size > 0,
                     f"{detail}; chart assumes {chart_rate:g} GB/min; {self.budget_at(rate)}")
        else:
            self.row(f"start {name}", f"{allocated / 1e9:.2f} of {size / 1e9:.0f} GB allocated", allocated < size,
                     f"{detail}; sparse: the file takes space as blocks are written")

    def budget_at(self, rate):
        """The rendered environment's startup budget next to its disk tier's zero-fill at the measured rate."""
        rendered = self.line["rendered"]
        gb = float(rendered["env"]["DYN_KVBM_DISK_CACHE_GB"])
        return (f"{self.line['cases']['start-zerofill']['environment']}'s {gb:g} GB tier: startup budget "
                f"{rendered['startup_budget_s']} s, zero-fill at this rate {gb / rate * 60:.0f} s")

    def crash(self, backing):
        case = self.cases["start-zerofill"]
        self.note("crash during zero-fill")
        with Disk(case, backing) as disk:
            with Worker(case, self.runtime_env, self.log) as worker:
                cache_dir = disk.cache_dir(worker.env)
                self.watch_allocation(worker, cache_dir, stop_at=int(1e9))
                worker.kill()
            time.sleep(0.5)
            left = cache_files(cache_dir)
            names = [n for n, _, _ in left]
            hidden = [n for n in names if n.startswith(HIDDEN)]
            with Worker(case, self.runtime_env, self.log) as worker:
                self.watch_allocation(worker, cache_dir, stop_at=1, ignore=names)  # the next start's own file
                after = [n for n, _, _ in cache_files(cache_dir)]
        self.row("crash mid zero-fill", f"left {names or 'nothing'}", True,
                 f"{len(hidden)} .fuse_hidden files; killed at >= 1 GB written")
        swept = not set(names) & set(after)
        self.row("next start's sweep", f"while restarting: {after}", swept and len(after) == 1,
                 "the script's rm of dynamo-kvbm-disk-cache-* removed the leftover before KVBM made its file")

    def round_trip(self, name, backing, local=False, changes=None, label=None):
        """P0 computed, reused from the CPU tier, then after the CPU tier evicted it, from disk."""
        case = self.cases[name]
        label = label or f"{name}{' (local dir)' if local else ''}"
        self.note(f"round trip {label}")
        with Disk(case, backing, local=local) as disk:
            local_dir = disk.backing / "kvbm" if local else None
            with Worker(case, self.runtime_env, self.log, changes=changes, local_dir=local_dir) as worker:
                status = self.watch_allocation(worker, local_dir if local else disk.cache_dir(worker.env))[4]
                bs, block_bytes = status["tokens_per_block"], status["block_bytes"]
                host_blocks = int(float(worker.env["DYN_KVBM_CPU_CACHE_GB"]) * 1e9 // block_bytes)
                p0 = prompt(1, 8, tokens_per_block=bs)
                m0 = worker.metrics()
                first = worker.ask({"op": "prefill", "tokens": p0})
                time.sleep(1.0)
                m1 = worker.metrics()
                second = worker.ask({"op": "prefill", "tokens": p0})
                time.sleep(1.0)
                m2 = worker.metrics()
                flood_blocks = 64
                floods = host_blocks // flood_blocks + 2
                for seed in range(floods):
                    worker.ask({"op": "prefill", "tokens": prompt(100 + seed, flood_blocks, tokens_per_block=bs)})
                time.sleep(2.0)
                m3 = worker.metrics()
                third = worker.ask({"op": "prefill", "tokens": p0})
                time.sleep(1.0)
                # kept as Prometheus scrapes it, for the KVBM dashboard's and alerts' queries
                last = worker.exposition()
                (self.out / f"kvbm-exposition-{self.version}.txt").write_text(last)
                m4 = samples(last)
                flags = cache_file_flags(worker.process.pid)
        evidence = {"requests": [first, second, third], "metrics": [m0, m1, m2, m3, m4],
                    "cache_fd_flags": [oct(f) for f in flags], "direct": [bool(f & os.O_DIRECT) for f in flags],
                    "host_blocks": host_blocks, "floods": floods, "tokens_per_block": bs,
                    "transfer_errors": self.transfer_errors()}
        with open(self.out / f"evidence-{self.version}.jsonl", "a") as f:
            f.write(json.dumps({"case": label, **evidence}) + "\n")
        blocks = 8
        self.row(f"{label}: G1 compute", f"matched {first['matched_tokens']}, offload d2h "
                 f"{delta(m1, m0, 'kvbm_offload_blocks_d2h'):g}, h2d {delta(m1, m0, 'kvbm_offload_blocks_h2d'):g}",
                 first["matched_tokens"] == 0 and delta(m1, m0, "kvbm_offload_blocks_d2h") == blocks)
        self.row(f"{label}: G2 -> G1", f"matched {second['matched_tokens']}, {second['loaded_blocks']} blocks, "
                 f"wrong {second['wrong_blocks']}, onboard h2d {delta(m2, m1, 'kvbm_onboard_blocks_h2d'):g}",
                 second["matched_tokens"] == blocks * bs and not second["wrong_blocks"]
                 and delta(m2, m1, "kvbm_onboard_blocks_h2d") == blocks, f"prefill {second['prefill_s'] * 1000:.0f} ms")
        return evidence, first, second, third, (m0, m1, m2, m3, m4)

    def tiers(self, backing, local=False):
        evidence, first, second, third, m = self.round_trip("tiers", backing, local=local)
        label = f"tiers{' (local dir)' if local else ''}"
        m0, m1, m2, m3, m4 = m
        self.row(f"{label}: G1 -> G2 -> G3", f"offload h2d {delta(m1, m0, 'kvbm_offload_blocks_h2d'):g} of 8 "
                 f"after one request (filter off)", delta(m1, m0, "kvbm_offload_blocks_h2d") == 8)
        matched = third["matched_tokens"] == 8 * evidence["tokens_per_block"]
        right = matched and not third["wrong_blocks"] and delta(m4, m3, "kvbm_onboard_blocks_d2d") == 8
        # Where the chart refuses a disk tier without GPUDirect Storage, the run checks that its reason holds:
        # the prefix matched from disk and onboarded wrong.
        refused = self.line["refuses_disk_without_gds"]["local" if local else "3fs"]
        stale = matched and bool(third["wrong_blocks"])
        self.row(f"{label}: G3 -> G1", f"matched {third['matched_tokens']}, {third['loaded_blocks']} blocks, wrong "
                 f"{third['wrong_blocks']}, onboard d2d {delta(m4, m3, 'kvbm_onboard_blocks_d2d'):g}, "
                 f"h2d {delta(m4, m3, 'kvbm_onboard_blocks_h2d'):g}",
                 stale if refused else right,
                 ("the chart refuses this disk tier unless kvbm.allowDiskTierWithoutGDS, "
                  + ("as the wrong bytes justify; " if stale else "yet the bytes are not stale: review the refusal; ")
                  if refused else "")
                 + f"after {evidence['floods']} x 64 blocks through a {evidence['host_blocks']}-block CPU tier; "
                 f"prefill {third['prefill_s'] * 1000:.0f} ms; "
                 f"disk hit rate {m4.get('kvbm_disk_cache_hit_rate', 0):.2f}; "
                 f"KVBM logged: {'; '.join(evidence['transfer_errors']) or 'no transfer error'}")
        if not local:
            direct = evidence["direct"]
            self.row(f"{label}: O_DIRECT", f"{sum(direct)} of {len(direct)} cache-file descriptors with O_DIRECT",
                     bool(direct) and not any(direct), "DYN_KVBM_DISK_DISABLE_O_DIRECT=true as rendered")

    def filter(self, backing):
        evidence, first, second, third, m = self.round_trip("filter", backing, label="filter (default on)")
        m0, m1, m2, m3, m4 = m
        once, twice = delta(m1, m0, "kvbm_offload_blocks_h2d"), delta(m2, m1, "kvbm_offload_blocks_h2d")
        self.row("filter on: disk offload", f"{once:g} blocks after one request, {twice:g} after the second",
                 once == 0, f"then from disk: matched {third['matched_tokens']}, wrong {third['wrong_blocks']}")

    def switches(self, backing):
        """Each presence-tested variable set to "false": on or off? Judged by what KVBM did."""
        sparse = {"DYN_KVBM_DISK_ZEROFILL_FALLBACK": None}
        results = {}
        case = self.cases["filter"]
        for variable, changes in (
                ("DYN_KVBM_DISK_ZEROFILL_FALLBACK", {"DYN_KVBM_DISK_ZEROFILL_FALLBACK": "false"}),
                ("DYN_KVBM_DISK_DISABLE_O_DIRECT", {**sparse, "DYN_KVBM_DISK_DISABLE_O_DIRECT": "false"}),
                ("DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER", {**sparse, "DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER": "false"}),
                ("O_DIRECT unset", {**sparse, "DYN_KVBM_DISK_DISABLE_O_DIRECT": None})):
            self.note(f"switch {variable} {changes}")
            with Disk(case, backing) as disk, \
                    Worker(case, self.runtime_env, self.log, changes=changes) as worker:
                first, last, size, allocated, status = self.watch_allocation(worker, disk.cache_dir(worker.env))
                m0 = worker.metrics()
                p7 = prompt(7, 8, tokens_per_block=status["tokens_per_block"])
                reply = worker.ask({"op": "prefill", "tokens": p7})
                time.sleep(1.0)
                m1 = worker.metrics()
                again = worker.ask({"op": "prefill", "tokens": p7})
                flags = cache_file_flags(worker.process.pid)
            direct = sum(1 for f in flags if f & os.O_DIRECT)
            results[variable] = {"allocated": allocated, "size": size, "h2d": delta(m1, m0, "kvbm_offload_blocks_h2d"),
                                 "direct_fds": direct, "fds": len(flags), "wrong": again["wrong_blocks"],
                                 "matched": again["matched_tokens"], "first": reply["matched_tokens"]}
        z = results["DYN_KVBM_DISK_ZEROFILL_FALLBACK"]
        self.row("ZEROFILL_FALLBACK=false", "zero-filled (on)" if z["allocated"] >= z["size"] > 0 else "sparse (off)",
                 True, "presence-tested: the chart renders it only when on")
        o = results["DYN_KVBM_DISK_DISABLE_O_DIRECT"]
        self.row("DISABLE_O_DIRECT=false", "O_DIRECT off (switch on)" if not o["direct_fds"] else "O_DIRECT used",
                 bool(o["fds"]), f"{o['direct_fds']} of {o['fds']} cache-file descriptors with O_DIRECT")
        f = results["DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER"]
        self.row("DISABLE_DISK_OFFLOAD_FILTER=false", "filter off (switch on)" if f["h2d"] >= 8 else "filter on",
                 True, f"offload h2d {f['h2d']:g} after one request")
        u = results["O_DIRECT unset"]
        self.row("O_DIRECT unset, on FUSE", f"{u['direct_fds']} of {u['fds']} descriptors with O_DIRECT; reuse matched "
                 f"{u['matched']}, wrong {u['wrong']}", not u["wrong"], "what the chart's default avoids")
        with open(self.out / f"evidence-{self.version}.jsonl", "a") as fh:
            fh.write(json.dumps({"case": "switches", **results}) + "\n")

    def run(self, only=None):
        steps = {"tiers": lambda: (self.tiers(WORK / "3fs"), self.tiers(WORK / "local", local=True)),
                 "start": lambda: (self.start("start-sparse", "/dev/shm/kvbm-3fs"),
                                   self.start("start-zerofill", WORK / "3fs")),
                 "crash": lambda: self.crash(WORK / "3fs"),
                 "filter": lambda: self.filter(WORK / "3fs"),
                 "switches": lambda: self.switches(WORK / "3fs")}
        for name, step in steps.items():
            if only and name not in only:
                continue
            started = time.monotonic()
            try:
                step()
            except Exception as e:
                self.row(name, f"did not run to the end: {type(e).__name__}: {e}", False)
            print(f"{self.version} {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        self.log.close()


def table(rows):
    header = ("line", "check", "result", "verdict", "detail")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="*")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(WORK / "out"))
    parser.add_argument("--only", action="append", help="tiers, start, crash, filter, switches")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    cases = json.loads((BUNDLE / "cases.json").read_text())
    import torch

    check(torch.cuda.is_available(), "no CUDA GPU: make kvbm-gpu runs on a GPU machine")
    card = torch.cuda.get_device_name(0)
    rows, failures = [], []
    for version in args.versions or sorted(cases):
        run = Run(version, cases, out)
        run.run(args.only)
        rows += run.rows
        failures += run.failures
    report = f"KVBM on {card}, {time.strftime('%Y-%m-%d')}\n\n{table(rows)}\n"
    print(report)
    (out / "kvbm-gpu.md").write_text(report)
    if failures:
        print("\n".join(["WRONG:", *failures]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
