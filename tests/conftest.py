import pytest

from testbed import servers
from tests.helm import HELM_MAJORS


@pytest.fixture
def fuse_servers():
    """The FUSE daemons (testbed.fusefs.FuseServer) a test starts, killed at the end (SIGKILL also ends a
    SIGSTOPped one)."""
    started = []
    yield started
    for server in started:
        server.kill()


@pytest.fixture(params=HELM_MAJORS, ids=lambda m: f"helm{m}")
def helm_major(request):
    return request.param


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    """A real etcd on 127.0.0.1, for one test module."""
    with servers.etcd_server(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    """A real nats-server with JetStream on 127.0.0.1, for one test module."""
    with servers.nats_server(tmp_path_factory.mktemp("nats")) as server:
        yield server
