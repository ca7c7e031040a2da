"""Test hosts in network namespaces of the test's own: the API server refuses loopback addresses in
EndpointSlices, so a Service that should lead to a real server here points at one of these. Nothing is
sent anywhere but to these addresses and loopback."""

import contextlib
import ipaddress
import itertools
import os
import subprocess

# Where the test hosts live, a /30 each: off the cluster's Service (10.0.0.0/24) and pod (10.244.0.0/16) ranges.
TEST_NETWORK = ipaddress.IPv4Network("10.254.0.0/16")
_numbers = itertools.count(1)


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class TestHost:
    """A network namespace joined to this host by a veth pair: `address` is the namespace's end."""

    __test__ = False  # not a test class

    def __init__(self, number):
        self.name = f"dyn-e2e-{os.getpid()}-{number}"
        self.host_link = f"dy{os.getpid() % 100000}h{number}"
        subnet = ipaddress.IPv4Network((int(TEST_NETWORK.network_address) + 4 * number, 30))
        self.gateway, self.address = (str(a) for a in subnet.hosts())

    @property
    def prefix(self):
        """What runs a command inside the namespace."""
        return ("ip", "netns", "exec", self.name)

    def create(self):
        peer = self.host_link.replace("h", "n", 1)
        ip("netns", "add", self.name)
        ip("link", "add", self.host_link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", self.name)
        ip("addr", "add", f"{self.gateway}/30", "dev", self.host_link)
        ip("link", "set", self.host_link, "up")
        ip("netns", "exec", self.name, "ip", "addr", "add", f"{self.address}/30", "dev", peer)
        ip("netns", "exec", self.name, "ip", "link", "set", peer, "up")
        ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        return self

    def delete(self):
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


@contextlib.contextmanager
def network_host():
    host = TestHost(next(_numbers))
    try:
        yield host.create()
    finally:
        host.delete()
