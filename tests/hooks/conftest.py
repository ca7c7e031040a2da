"""Throwaway certificates for the hooks tests (the etcd and NATS servers are in tests/conftest.py)."""

import pytest

from testbed import servers


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return servers.make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory):
    return servers.make_certs(tmp_path_factory.mktemp("other-certs"), name="other")
