"""Servers shared by the hooks tests: real etcd and NATS on 127.0.0.1, and throwaway certificates."""

import pytest

from tests.hooks import servers


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return servers.make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory):
    return servers.make_certs(tmp_path_factory.mktemp("other-certs"), name="other")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with servers.etcd_server(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    with servers.nats_server(tmp_path_factory.mktemp("nats")) as server:
        yield server
