"""Test hosts in network namespaces of the test's own, on a bridge of this host: the API server refuses
loopback addresses in EndpointSlices, so a Service that should lead to a real server here points at one of
these, and the runner's pods live in them (each pod, or each node for the pods on its host network). They
reach each other and this host's bridge address, nothing else; nothing is sent anywhere but to these
addresses and loopback."""

import contextlib
import ctypes
import ipaddress
import itertools
import os
import pathlib
import socket
import subprocess
import threading

# Where the test hosts live: off the cluster's Service (10.0.0.0/24) and pod (10.244.0.0/16) ranges. Each test
# process takes a /24 of it, with a bridge of its own.
TEST_NETWORK = ipaddress.IPv4Network("10.254.0.0/16")
CLONE_NEWNET = 0x40000000
_numbers = itertools.count(2)
_lock = threading.Lock()
_subnet = None


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def subnet():
    """This test process's /24 and its bridge, made on first use: the first /24 whose bridge no live process
    holds (a bridge's alias names its process)."""
    global _subnet
    with _lock:
        for number in range(1, 255) if _subnet is None else ():
            name = f"dyb{number}"
            link = pathlib.Path("/sys/class/net") / name
            if link.exists():
                owner = (link / "ifalias").read_text().strip()
                if owner.isdigit() and pathlib.Path(f"/proc/{owner}").exists():
                    continue
                subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)
            if subprocess.run(["ip", "link", "add", name, "type", "bridge"], capture_output=True,
                              timeout=30).returncode != 0:
                continue  # another process took it first
            ip("link", "set", name, "alias", str(os.getpid()))
            network = ipaddress.IPv4Network((int(TEST_NETWORK.network_address) + 256 * number, 24))
            ip("addr", "add", f"{network.network_address + 1}/{network.prefixlen}", "dev", name)
            ip("link", "set", name, "up")
            _subnet = (name, network)
            break
        if _subnet is None:
            raise RuntimeError("every /24 of the test network is taken by a live test process")
        return _subnet


def bridge_address():
    """This host's address on the test bridge, as the test hosts reach it."""
    return str(subnet()[1].network_address + 1)


class TestHost:
    """A network namespace on the test bridge: `address` is its own."""

    __test__ = False  # not a test class

    def __init__(self, number):
        self.name = f"dyn-e2e-{os.getpid()}-{number}"
        self.host_link = f"dy{os.getpid() % 100000}h{number}"
        self.bridge, network = subnet()
        self.gateway = bridge_address()
        self.address = str(network.network_address + number)
        self.prefixlen = network.prefixlen
        self.closed = threading.Event()  # set when it is deleted: what serves inside it stops

    @property
    def prefix(self):
        """What runs a command inside the namespace (network only: `ip netns exec` would also give it a
        mount namespace of its own, cut from this host's mount propagation)."""
        return ("nsenter", f"--net=/run/netns/{self.name}", "--")

    def create(self):
        peer = self.host_link.replace("h", "n", 1)
        ip("netns", "add", self.name)
        ip("link", "add", self.host_link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", self.name)
        ip("link", "set", self.host_link, "master", self.bridge, "up")
        ip("netns", "exec", self.name, "ip", "addr", "add", f"{self.address}/{self.prefixlen}", "dev", peer)
        ip("netns", "exec", self.name, "ip", "link", "set", peer, "up")
        ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        # A default route, as a pod has: programs that find their own address by it (Dynamo's advertised
        # addresses) find this one. Nothing is forwarded beyond this host.
        ip("netns", "exec", self.name, "ip", "route", "add", "default", "via", self.gateway)
        return self

    def delete(self):
        self.closed.set()
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    def listen(self, port, host="127.0.0.1"):
        """A listening TCP socket inside the namespace, for this process to accept on: a thread joins the
        namespace only to make it (a socket stays in the namespace it was made in)."""
        made = {}

        def make():
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{self.name}") as target:
                if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                    made["error"] = OSError(ctypes.get_errno(), f"setns into {self.name}")
                    return
            made["socket"] = socket.create_server((host, port))
        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if "error" in made:
            raise made["error"]
        return made["socket"]


def create_host():
    """A new test host; delete() it."""
    return TestHost(next(_numbers)).create()


@contextlib.contextmanager
def network_host():
    host = create_host()
    try:
        yield host
    finally:
        host.delete()


def relay(listener, target, stop):
    """Forward every connection accepted on `listener` to `target` (host, port) as this host reaches it, until
    `stop` is set: a port of this host's loopback made reachable at the same port inside a test host."""
    listener.settimeout(0.2)

    def pipe(source, sink):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve():
        while not stop.is_set():
            try:
                inside, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                outside = socket.create_connection(target, timeout=5)
            except OSError:
                inside.close()
                continue
            outside.settimeout(None)
            inside.settimeout(None)
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()
        listener.close()
    threading.Thread(target=serve, daemon=True).start()
