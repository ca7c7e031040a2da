"""`dynamo-hooks pre-install` end to end: the FAKE Kubernetes API for the Services and the record, real
etcd and NATS servers on loopback, and a 3FS wire-format peer for mgmtd."""

import json

import pytest

from dynamo_hooks import cli
from testbed.fake_kube_api import config_map
from testbed.servers import free_port
from testbed.threefs_peer import ThreeFSPeer
from tests.hooks.cluster import dead_url, fake_api, peer, publish, write_kubeconfig

RELEASE_NS = "dynamo-qwen"
RECORD = "dynamo-dynamo-offloading-endpoints"


@pytest.fixture
def mgmtd():
    with ThreeFSPeer("primary", cluster_id="ipoib") as peer:
        yield peer


@pytest.fixture
def api(monkeypatch, tmp_path, etcd, nats):
    with fake_api(monkeypatch, tmp_path) as fake:
        publish(fake, "baseten", "etcd-headless", etcd.port, not_ready_ips=("127.0.0.2",))
        publish(fake, "baseten", "nats-headless", nats.port)
        yield fake


def pre_install(*extra, mgmtd=None, cluster_id="ipoib"):
    args = ["pre-install", "--resolve", "--timeout=2",
            peer("etcd", seed=True), peer("nats", seed=True),
            f"--record-name={RECORD}", f"--record-namespace={RELEASE_NS}"]
    if mgmtd:
        args += [f"--mgmtd-addresses={mgmtd.address('RDMA')}", f"--cluster-id={cluster_id}"]
    return cli.main(args + list(extra))


def record(api):
    return api.get("configmaps", RELEASE_NS, RECORD)


def test_first_install_verifies_and_leaves_the_record_to_the_worker(api, mgmtd, capsys):
    """Helm creates the release's objects, the record ConfigMap among them, only after pre-install hooks."""
    assert pre_install(mgmtd=mgmtd) == 0
    out = capsys.readouterr().out
    assert "mgmtd: ok" in out
    assert f"ConfigMap {RELEASE_NS}/{RECORD} does not exist yet (a first install)" in out
    assert record(api) is None


def test_upgrade_records_the_serving_pods(api, etcd, nats, mgmtd, capsys):
    api.add_config_map(config_map(RELEASE_NS, RECORD, None, labels={"app.kubernetes.io/managed-by": "Helm"}))
    assert pre_install(mgmtd=mgmtd) == 0
    assert f"recorded the resolved addresses in ConfigMap {RELEASE_NS}/{RECORD}" in capsys.readouterr().out
    # Only the serving pod: 127.0.0.2 is published ready but is not serving.
    assert record(api)["data"] == {"ETCD_ENDPOINTS": f"http://127.0.0.1:{etcd.port}",
                                   "NATS_SERVER": f"nats://127.0.0.1:{nats.port}"}
    assert record(api)["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "Helm"}


def test_json_report(api, mgmtd, capsys):
    assert pre_install("--json", mgmtd=mgmtd) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [c["check"] for c in report["checks"]] == ["etcd", "nats", "mgmtd", "record"]
    primary = report["checks"][2]["findings"][0]
    assert primary["reason"] == "ok" and primary["details"]["hostname"]


def test_wrong_cluster_fails_and_records_nothing(api, mgmtd, capsys):
    api.add_config_map(config_map(RELEASE_NS, RECORD, None))
    assert pre_install(mgmtd=mgmtd, cluster_id="other") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mgmtd {mgmtd.address('RDMA')}:")
    assert "cluster" in err[0].lower()
    assert not record(api).get("data")


def test_etcd_down_names_the_peer(api, capsys):
    api.objects["endpointslices"].clear()
    dead = free_port()
    publish(api, "baseten", "etcd-headless", dead)
    publish(api, "baseten", "nats-headless", free_port())
    assert pre_install() == 1
    err = capsys.readouterr().err
    assert f"etcd http://127.0.0.1:{dead}:" in err and "refused" in err
    assert record(api) is None


def test_warn_mode_goes_on(api, etcd, capsys):
    api.add_config_map(config_map(RELEASE_NS, RECORD, None))
    api.objects["endpointslices"].clear()
    publish(api, "baseten", "etcd-headless", etcd.port)
    publish(api, "baseten", "nats-headless", free_port())
    assert pre_install(peer("nats", seed=True, check="warn")) == 0
    out = capsys.readouterr().out
    assert "warning: nats nats://127.0.0.1:" in out
    assert record(api)["data"]["ETCD_ENDPOINTS"] == f"http://127.0.0.1:{etcd.port}"


def test_forbidden_namespace(api, capsys):
    api.forbid("baseten")
    assert pre_install() == 1
    err = capsys.readouterr().err
    assert "forbidden" in err and "baseten" in err


def test_missing_service(api, capsys):
    api.objects["services"].clear()
    assert pre_install() == 1
    assert "Service baseten/etcd-headless not found" in capsys.readouterr().err


def test_explicit_addresses_need_no_api(monkeypatch, tmp_path, etcd, nats, capsys):
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path, dead_url()))
    args = ["pre-install", "--resolve", "--timeout=2", peer("etcd", explicit=[etcd.address]),
            peer("nats", explicit=[f"nats://{nats.address}"])]
    assert cli.main(args) == 0
    assert "etcd: ok" in capsys.readouterr().out


def test_embedded_servers_are_skipped(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path, dead_url()))
    args = ["pre-install", "--timeout=1", peer("etcd", namespace=RELEASE_NS, service="etcd", embedded=True),
            peer("nats", namespace=RELEASE_NS, service="nats", embedded=True)]
    assert cli.main(args) == 0
    assert "created after this hook" in capsys.readouterr().out


def test_unreachable_api_fails_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path, dead_url()))
    assert pre_install() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0]


def test_a_port_without_the_expected_name_is_taken_by_number(monkeypatch, tmp_path, etcd, nats, capsys):
    """Bitnami's NATS chart names the client port tcp-client, not nats: the hook uses the Service's port
    number instead, checks NATS there, and says so."""
    with fake_api(monkeypatch, tmp_path) as fake:
        publish(fake, "baseten", "etcd-headless", etcd.port)
        publish(fake, "baseten", "nats-headless", nats.port, port_name="tcp-client")
        status = cli.main(["pre-install", "--resolve", "--timeout=2", peer("etcd", seed=True),
                           peer("nats", seed=True, port=nats.port)])
    out = capsys.readouterr().out
    assert status == 0
    assert (f"ok: nats baseten/nats-headless: Service baseten/nats-headless has no port named 'nats'; "
            f"used port {nats.port}") in out.splitlines()
    assert "nats: ok" in out


@pytest.mark.parametrize("nats_args", [{}, {"namespace": "baseten", "service": "absent"}])
def test_an_off_check_never_fails_the_install(monkeypatch, tmp_path, etcd, capsys, nats_args):
    """NATS configured nowhere, or its Service missing: with its check off, the install goes on."""
    with fake_api(monkeypatch, tmp_path) as fake:
        publish(fake, "baseten", "etcd-headless", etcd.port)
        status = cli.main(["pre-install", "--timeout=2", peer("etcd", seed=True), "--resolve",
                           peer("nats", check="off", **nats_args)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.err == ""
    assert [line for line in captured.out.splitlines() if line.startswith("warning: nats")]
