"""The dynamo-hooks command line: the installed console script, exit statuses and output formats."""

import json
import pathlib
import subprocess
import sys

import pytest

from dynamo_hooks import cli
from tests.hooks.cluster import fake_api, publish
from tests.hooks.servers import free_port
from tests.hooks.threefs_peer import ThreeFSPeer

SCRIPT = str(pathlib.Path(sys.executable).with_name("dynamo-hooks"))


def test_console_script_lists_every_command():
    out = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    for command in ("check-etcd", "check-nats", "check-mgmtd", "resolve-endpoints", "pre-install", "worker-init"):
        assert command in out


def test_console_script_fails_with_one_line_naming_the_peer():
    port = free_port()
    done = subprocess.run([SCRIPT, "check-etcd", f"--endpoints=http://127.0.0.1:{port}", "--timeout=1"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"etcd http://127.0.0.1:{port}: connection refused"]
    assert done.stdout.splitlines() == [f"error: etcd http://127.0.0.1:{port}: connection refused"]


def test_resolve_endpoints(monkeypatch, tmp_path, capsys):
    with fake_api(monkeypatch, tmp_path) as api:
        publish(api, "baseten", "etcd-headless", 2379, ready_ips=("10.0.0.2", "10.0.0.1"), not_ready_ips=("10.0.0.3",))
        assert cli.main(["resolve-endpoints", "--service=baseten/etcd-headless"]) == 0
        assert capsys.readouterr().out.strip() == "10.0.0.1:2379,10.0.0.2:2379"
        assert cli.main(["resolve-endpoints", "--service=baseten/etcd-headless", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"service": "baseten/etcd-headless",
                                                       "addresses": ["10.0.0.1:2379", "10.0.0.2:2379"], "note": ""}
        assert cli.main(["resolve-endpoints", "--service=baseten/nats-headless"]) == 1
        assert capsys.readouterr().err.strip() == "baseten/nats-headless: Service baseten/nats-headless not found"


def test_check_mgmtd_json(capsys):
    with ThreeFSPeer("no-primary", cluster_id="ipoib") as peer:
        assert cli.main(["check-mgmtd", f"--address={peer.address('RDMA')}", "--cluster-id=ipoib", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["checks"][0]["findings"][0]["reason"] == "no-primary"


@pytest.mark.parametrize("argv", [["check-etcd"], ["resolve-endpoints", "--service=no-namespace"],
                                  ["check-mgmtd", "--address=RDMA://10.0.0.1:8000"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        status = cli.main(argv)
        raise SystemExit(status)
    assert exit_.value.code == 2
