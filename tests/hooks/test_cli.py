"""The dynamo-hooks command line: the installed console script, exit statuses and output formats."""

import json
import pathlib
import subprocess
import sys

import pytest

from dynamo_hooks import cli
from testbed.servers import free_port
from testbed.threefs_peer import ThreeFSPeer
from tests.hooks.cluster import fake_api, publish

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
    assert done.stdout == ""  # said once: a terminal, and a hook's log that Helm shows, carry it once


def test_resolve_endpoints(monkeypatch, tmp_path, capsys):
    with fake_api(monkeypatch, tmp_path) as api:
        publish(api, "baseten", "etcd-headless", 2379, ready_ips=("10.0.0.2", "10.0.0.1"), not_ready_ips=("10.0.0.3",))
        assert cli.main(["resolve-endpoints", "--service=baseten/etcd-headless"]) == 0
        assert capsys.readouterr().out.splitlines() == ["resolve-endpoints: ok (baseten/etcd-headless: "
                                                        "10.0.0.1:2379,10.0.0.2:2379)"]
        assert cli.main(["resolve-endpoints", "--service=baseten/etcd-headless", "--json"]) == 0
        (check,) = json.loads(capsys.readouterr().out)["checks"]
        assert check["findings"][0]["details"] == {"addresses": ["10.0.0.1:2379", "10.0.0.2:2379"]}
        assert cli.main(["resolve-endpoints", "--service=baseten/nats-headless"]) == 1
        assert capsys.readouterr().err.strip() == ("resolve-endpoints baseten/nats-headless: "
                                                   "Service baseten/nats-headless not found")
        # Bitnami's NATS names its client port tcp-client: with a port number, that one is read, and said so.
        publish(api, "baseten", "nats", 4222, ready_ips=("10.0.0.7",), port_name="tcp-client")
        assert cli.main(["resolve-endpoints", "--service=baseten/nats:4222", "--port-name=nats"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "ok: resolve-endpoints baseten/nats: Service baseten/nats has no port named 'nats'; used port 4222",
            "resolve-endpoints: ok (baseten/nats: 10.0.0.7:4222)"]


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


@pytest.mark.parametrize("timeout", ["0", "-5", "nan", "soon"])
def test_a_timeout_out_of_range_is_a_usage_error(timeout):
    done = subprocess.run([SCRIPT, "check-etcd", "--endpoints=127.0.0.1:2379", f"--timeout={timeout}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith("dynamo-hooks check-etcd: error: argument --timeout: ")


def failure(*argv):
    """(exit status, stderr lines) of the console script."""
    done = subprocess.run([SCRIPT, *argv], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr.splitlines()


def test_each_command_fails_with_one_line_naming_what_is_wrong(tmp_path):
    port = free_port()
    assert failure("check-nats", f"--server=nats://127.0.0.1:{port}", "--timeout=1") == (
        1, [f"nats nats://127.0.0.1:{port}: connection refused"])
    assert failure("check-mgmtd", f"--address=TCP://127.0.0.1:{port}", "--cluster-id=ipoib", "--timeout=1") == (
        1, [f"mgmtd TCP://127.0.0.1:{port}: connection to 127.0.0.1:{port} refused (nothing listens there)"])
    assert failure("check-mgmtd", "--address=TCP://mgmtd.local:8000", "--cluster-id=ipoib") == (
        1, ["mgmtd TCP://mgmtd.local:8000: 3FS would reject the address 'TCP://mgmtd.local:8000': it takes "
            "TYPE://a.b.c.d:port with a numeric IPv4 address (no hostname), TYPE one of TCP, RDMA, IPoIB, LOCAL, UNIX"])
    assert failure("cleanup-mounts", "--root=/etc") == (
        2, ["dynamo-hooks cleanup-mounts: refusing to clean up the system directory /etc"])
    output = tmp_path / "absent" / "worker.env"
    assert failure("worker-init", f"--output={output}") == (
        1, [f"dynamo-hooks worker-init: cannot write {output}: No such file or directory"])
    assert failure("worker-init", f"--output={tmp_path / 'w.env'}", f"--hf-home={tmp_path}", "--model-repo=org/m") == (
        1, [f"worker-init: model org/m is not in the Hugging Face cache {tmp_path}/hub (no models--org--m); "
            f"download it on this node with `HF_HOME={tmp_path} huggingface-cli download org/m`, or enable "
            "modelDownloader"])


@pytest.mark.parametrize("argv", [["check-etcd", "--endpoints=http://127.0.0.1:1"], ["check-nats", "--server=nats://127.0.0.1:1"],
                                  ["check-mgmtd", "--address=TCP://127.0.0.1:1", "--cluster-id=x"],
                                  ["cleanup-mounts", "--root=/nonexistent-staging"]], ids=lambda a: a[0])
def test_commands_without_api_calls_never_load_the_kubernetes_client(argv):
    """A Job pays for every module a command imports: these make no API call."""
    probe = ("import sys; from dynamo_hooks.cli import main; main(sys.argv[1:])\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'urllib3', 'yaml')))")
    done = subprocess.run([sys.executable, "-c", probe, *argv, "--timeout=0.5"], capture_output=True, text=True,
                          timeout=30)
    assert done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr


def test_every_failure_is_told_once(capsys):
    """The first failure on stderr (the line Helm shows), every other one on stdout: none twice, none lost."""
    from dynamo_hooks.report import ERROR, Finding, Report

    reports = [Report("etcd", [Finding("a", ERROR, "refused", "connection refused")]),
               Report("nats", [Finding("b", ERROR, "timeout", "no answer")])]
    assert cli.finish(reports, as_json=False) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == ["etcd a: connection refused (and 1 more failed: nats)"]
    assert out.splitlines() == ["error: nats b: no answer"]


def test_a_check_with_no_peer_fails_with_one_line(capsys):
    assert cli.main(["check-etcd", "--endpoints= , "]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", "etcd: no peer to check\n")
