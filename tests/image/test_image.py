"""The built hooks image: its configuration (as saved in the OCI archive `make push` copies) and
dynamo-hooks run inside it, as its default user, against real NATS and etcd servers on 127.0.0.1."""

import pathlib

import pytest

from testbed import servers

COMMANDS = ["check-etcd", "check-nats", "check-mgmtd", "resolve-endpoints", "pre-install", "worker-init",
            "cleanup-mounts", "cleanup-nodes"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Throwaway certificates, readable by the image's user (uid 65532) where they are mounted."""
    directory = tmp_path_factory.mktemp("certs")
    made = servers.make_certs(directory)
    directory.chmod(0o755)
    for path in vars(made).values():
        pathlib.Path(path).chmod(0o644)
    return made


def test_archive_config(archive_config, version):
    """What `make push` copies: run as uid/gid 65532, entrypoint dynamo-hooks, OCI annotations."""
    config = archive_config
    settings = config["config"]
    assert settings["User"] == "65532:65532"
    assert settings["Entrypoint"] == ["dynamo-hooks"]
    labels = settings["Labels"]
    assert labels["org.opencontainers.image.title"] == "dynamo-offloading-hooks"
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.description"]
    assert "org.opencontainers.image.source" in labels
    assert config["architecture"] and config["os"] == "linux"


def test_runs_as_65532_by_default(image):
    assert image.config["User"] == "65532:65532"
    assert image.config["Entrypoint"] == ["dynamo-hooks"]
    done = image.exec("python3", "-c", "import os; print(os.getuid(), os.getgid())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["65532", "65532"]


def test_help_lists_the_commands(image):
    done = image.run("--help")
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert command in done.stdout


def test_no_bytecode_written_and_root_filesystem_not_writable(image):
    """The chart's readOnlyRootFilesystem: nothing under the venv or the stdlib is the user's to write."""
    done = image.exec("python3", "-c", "import os, sys, dynamo_hooks.cli; "
                      "print(sys.dont_write_bytecode, os.access(sys.prefix, os.W_OK), "
                      "os.access(os.path.dirname(os.__file__), os.W_OK))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False"]


def test_check_nats_against_a_real_server(image, nats):
    done = image.run("check-nats", "--server", nats.url, "--timeout", "10")
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_nats_over_tls(image, tmp_path_factory, certs):
    """TLS with a client certificate, the certificates mounted read-only as the chart mounts them."""
    directory = tmp_path_factory.mktemp("nats-tls")
    with servers.nats_server(directory, tls=certs) as server:
        mount = pathlib.Path(certs.ca).parent
        done = image.run("check-nats", "--server", server.url, "--timeout", "10", "--nats-ca", "/certs/ca.pem",
                         "--nats-cert", "/certs/client.pem", "--nats-key", "/certs/client.key",
                         volumes=[(mount, "/certs")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_nats_fails_without_a_server(image):
    done = image.run("check-nats", "--server", f"nats://127.0.0.1:{servers.free_port()}", "--timeout", "2")
    assert done.returncode == 1
    assert done.stderr.strip()


def test_check_etcd_against_a_real_server(image, etcd):
    done = image.run("check-etcd", "--endpoints", etcd.url, "--timeout", "10")
    assert done.returncode == 0, done.stdout + done.stderr
