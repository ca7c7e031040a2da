"""`dynamo-hooks worker-init`, the worker's resolve sidecar, end to end: resolution through the FAKE
Kubernetes API, its fallbacks, waiting for real etcd and NATS, and the model in a real cache layout."""

import subprocess
import threading
import time

import pytest

from dynamo_hooks import cli
from testbed.fake_kube_api import config_map
from testbed.servers import free_port
from tests.hooks.cluster import dead_url, fake_api, peer, publish, write_kubeconfig
from tests.hooks.test_model_path import MAIN, write_cache
from tests.timing import SLACK


@pytest.fixture
def hf_home(tmp_path):
    write_cache(tmp_path / "hf")
    return tmp_path / "hf"


def worker_init(tmp_path, hf_home, *extra, wait=5):
    output = tmp_path / "worker.env"
    args = ["worker-init", "--resolve", "--timeout=1", f"--wait={wait}",
            peer("etcd", seed=True), peer("nats", seed=True),
            f"--hf-home={hf_home}", "--model-repo=Qwen/Qwen3-8B", f"--output={output}"]
    return cli.main(args + list(extra)), output


def sourced(env_file, *names):
    """The variables as the worker's shell sees them after sourcing the file."""
    script = f". {env_file}; " + "; ".join(f'printf "%s\\n" "${name}"' for name in names)
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()


def record_dir(tmp_path, **data):
    """The hook's record as the kubelet mounts a ConfigMap: one file per key."""
    directory = tmp_path / "record"
    directory.mkdir()
    for key, value in data.items():
        (directory / key).write_text(value)
    return directory


def test_resolves_and_hands_over(monkeypatch, tmp_path, etcd, nats, hf_home):
    with fake_api(monkeypatch, tmp_path) as api:
        publish(api, "baseten", "etcd-headless", etcd.port, not_ready_ips=("127.0.0.9",))
        publish(api, "baseten", "nats-headless", nats.port)
        status, env_file = worker_init(tmp_path, hf_home)
    assert status == 0
    assert sourced(env_file, "ETCD_ENDPOINTS", "NATS_SERVER", "MODEL_PATH") == [
        f"http://127.0.0.1:{etcd.port}", f"nats://127.0.0.1:{nats.port}",
        str(hf_home / "hub" / "models--Qwen--Qwen3-8B" / "snapshots" / MAIN)]


def test_unreachable_api_falls_back_to_the_record(monkeypatch, tmp_path, etcd, nats, hf_home, capsys):
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path, dead_url()))
    record = record_dir(tmp_path, ETCD_ENDPOINTS=f"http://127.0.0.1:{etcd.port}",
                        NATS_SERVER=f"nats://127.0.0.1:{nats.port}")
    status, env_file = worker_init(tmp_path, hf_home, f"--record-dir={record}")
    assert status == 0
    assert sourced(env_file, "ETCD_ENDPOINTS", "NATS_SERVER") == [f"http://127.0.0.1:{etcd.port}",
                                                                 f"nats://127.0.0.1:{nats.port}"]
    assert "(record)" in capsys.readouterr().out


@pytest.mark.parametrize("failure", ["forbidden", "timeout", "server-error"])
def test_every_api_failure_falls_back_to_the_record(monkeypatch, tmp_path, etcd, nats, hf_home, capsys, failure):
    """The API answers, but not with addresses: 403 (a Role removed), no answer in time, 500. The FAKE API
    stands in for what a real apiserver cannot easily be made to do (hang, fail)."""
    record = record_dir(tmp_path, ETCD_ENDPOINTS=f"http://127.0.0.1:{etcd.port}",
                        NATS_SERVER=f"nats://127.0.0.1:{nats.port}")
    with fake_api(monkeypatch, tmp_path) as api:
        publish(api, "baseten", "etcd-headless", 1)  # what the API would say, were it asked
        publish(api, "baseten", "nats-headless", 1)
        if failure == "forbidden":
            api.forbid("baseten")
        elif failure == "timeout":
            api.set_delay(3.0)
        else:
            api.fail_with(500)
        status, env_file = worker_init(tmp_path, hf_home, f"--record-dir={record}")
    assert status == 0
    assert sourced(env_file, "ETCD_ENDPOINTS", "NATS_SERVER") == [f"http://127.0.0.1:{etcd.port}",
                                                                 f"nats://127.0.0.1:{nats.port}"]
    out = capsys.readouterr().out
    assert f"etcd: http://127.0.0.1:{etcd.port} (record)" in out.splitlines()
    assert "etcd: cannot resolve baseten/etcd-headless (" in out


def test_no_api_and_no_record_leaves_the_values(monkeypatch, tmp_path, hf_home):
    """Without the API or a record (installed with --no-hooks), the worker keeps the chart's values."""
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path, dead_url()))
    status, env_file = worker_init(tmp_path, hf_home, f"--record-dir={tmp_path / 'absent'}")
    assert status == 0
    assert "ETCD_ENDPOINTS" not in env_file.read_text() and "MODEL_PATH" in env_file.read_text()


def test_waits_for_etcd_then_gives_up_naming_it(monkeypatch, tmp_path, nats, hf_home, capsys):
    with fake_api(monkeypatch, tmp_path) as api:
        dead = free_port()
        publish(api, "baseten", "etcd-headless", dead)
        publish(api, "baseten", "nats-headless", nats.port)
        start = time.monotonic()
        status, env_file = worker_init(tmp_path, hf_home, wait=3)
        elapsed = time.monotonic() - start
    assert status == 1 and not env_file.exists()
    assert 3 <= elapsed < 3 + 2 + 1 + SLACK  # the wait, plus at most one retry interval and one timeout
    err = capsys.readouterr().err
    assert f"etcd http://127.0.0.1:{dead}:" in err and "waited 3 s" in err


def test_warn_and_off_checks_do_not_hold_the_start(monkeypatch, tmp_path, nats, hf_home, capsys):
    with fake_api(monkeypatch, tmp_path) as api:
        dead = free_port()
        publish(api, "baseten", "etcd-headless", dead)
        publish(api, "baseten", "nats-headless", nats.port)
        status, env_file = worker_init(tmp_path, hf_home, peer("etcd", seed=True, check="warn"), wait=1)
        assert status == 0
        assert f"warning: etcd http://127.0.0.1:{dead}: connection refused" in capsys.readouterr().out
        assert sourced(env_file, "ETCD_ENDPOINTS") == [f"http://127.0.0.1:{dead}"]
        status, env_file = worker_init(tmp_path, hf_home, peer("etcd", seed=True, check="off"), wait=30)
        out = capsys.readouterr().out
        assert status == 0 and "waiting" not in out
        # Off: the resolved address is handed over without being tried.
        assert "connection refused" not in out
        assert sourced(env_file, "ETCD_ENDPOINTS") == [f"http://127.0.0.1:{dead}"]


def test_waits_until_a_not_yet_ready_server_serves(monkeypatch, tmp_path, etcd, nats, hf_home):
    """An embedded server starts after the pre-install hook: the resolve sidecar waits until it serves."""
    with fake_api(monkeypatch, tmp_path) as api:
        publish(api, "baseten", "etcd-headless", etcd.port, ready_ips=(), not_ready_ips=("127.0.0.1",))
        publish(api, "baseten", "nats-headless", nats.port)
        slices = [o for o in api.objects["endpointslices"].values() if "etcd" in o["metadata"]["name"]]

        def becomes_ready():
            time.sleep(1.5)
            slices[0]["endpoints"][0]["conditions"]["serving"] = True

        threading.Thread(target=becomes_ready, daemon=True).start()
        status, env_file = worker_init(tmp_path, hf_home, wait=20)
    assert status == 0
    assert sourced(env_file, "ETCD_ENDPOINTS") == [f"http://127.0.0.1:{etcd.port}"]


def test_missing_model_says_how_to_download(monkeypatch, tmp_path, etcd, nats, capsys):
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path, dead_url()))
    status, _ = worker_init(tmp_path, tmp_path / "empty-cache", peer("etcd", explicit=[etcd.address]),
                            peer("nats", explicit=[f"nats://{nats.address}"]))
    assert status == 1
    assert "huggingface-cli download Qwen/Qwen3-8B" in capsys.readouterr().err


def test_records_what_it_resolved_for_the_next_start(monkeypatch, tmp_path, etcd, nats, hf_home, capsys):
    monkeypatch.setenv("POD_NAMESPACE", "dynamo-qwen")
    with fake_api(monkeypatch, tmp_path) as api:
        publish(api, "baseten", "etcd-headless", etcd.port)
        publish(api, "baseten", "nats-headless", nats.port)
        api.add_config_map(config_map("dynamo-qwen", "endpoints", None))
        status, _ = worker_init(tmp_path, hf_home, "--record-name=endpoints")
        assert status == 0
        assert api.get("configmaps", "dynamo-qwen", "endpoints")["data"] == {
            "ETCD_ENDPOINTS": f"http://127.0.0.1:{etcd.port}", "NATS_SERVER": f"nats://127.0.0.1:{nats.port}"}
        assert "recorded the resolved addresses in ConfigMap dynamo-qwen/endpoints" in capsys.readouterr().out

        api.forbid("dynamo-qwen", "configmaps", "patch")  # a start never fails over its record
        status, env_file = worker_init(tmp_path, hf_home, "--record-name=endpoints")
        assert status == 0 and "ETCD_ENDPOINTS" in env_file.read_text()
        assert "warning: could not record the resolved addresses" in capsys.readouterr().out


def test_off_check_does_not_wait_for_serving_pods(monkeypatch, tmp_path, nats, hf_home, capsys):
    with fake_api(monkeypatch, tmp_path) as api:
        publish(api, "baseten", "etcd-headless", 2379, ready_ips=(), not_ready_ips=("127.0.0.1",))
        publish(api, "baseten", "nats-headless", nats.port)
        start = time.monotonic()
        status, env_file = worker_init(tmp_path, hf_home, peer("etcd", seed=True, check="off"), wait=30)
    assert status == 0 and time.monotonic() - start < 10
    assert "ETCD_ENDPOINTS" not in env_file.read_text()
    assert "the check is off: starting with the worker's values" in capsys.readouterr().out


def test_unreadable_certificate_is_one_line(monkeypatch, tmp_path, etcd, nats, hf_home, capsys):
    status, _ = worker_init(tmp_path, hf_home, peer("etcd", explicit=[etcd.address], ca="/nonexistent/ca.crt"),
                            peer("nats", explicit=[f"nats://{nats.address}"]))
    assert status == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "dynamo-hooks worker-init: [Errno 2] No such file or directory: '/nonexistent/ca.crt'"]
