"""A multi-host test bed on one machine: Linux network namespaces joined by a private bridge.

Each tokenyard process runs on its own "host" (namespace) with its own address, so a test can cut
one host's link (`ip link set ... down`) as a real network partition. Needs root and iproute2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.integration.processes import Service

SUBNET = "10.231.{}.{}"


def available() -> str | None:
    """None when the bed can be built here, else why not (the skip reason)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` command"
    probe = subprocess.run(["ip", "netns", "add", f"typrobe{os.getpid()}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"typrobe{os.getpid()}"], check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NetnsBed:
    """Hosts on one bridge; the test process itself sits on the bridge at .1."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.tag = f"{os.getpid() % 10000}"
        self.net = os.getpid() % 200 + 20  # third octet, so parallel runs do not collide
        self.bridge = f"tyb{self.tag}"
        self.log_dir = log_dir
        self.env = env
        self.hosts: dict[str, str] = {}  # name -> address
        self.services: list[Service] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{SUBNET.format(self.net, 1)}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> str:
        """A namespace with a veth link to the bridge; returns its address."""
        address = SUBNET.format(self.net, len(self.hosts) + 2)
        ns, outside, inside = self._names(name)
        _ip("netns", "add", ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        self.hosts[name] = address
        return address

    def run(self, host: str, name: str, args: list[str]) -> Service:
        ns = self._names(host)[0]
        service = Service(name, args, self.log_dir, self.env, prefix=["ip", "netns", "exec", ns]).start()
        self.services.append(service)
        return service

    def cut(self, host: str) -> None:
        """Partition a host from the others: its link to the bridge goes down."""
        _ip("link", "set", self._names(host)[1], "down")

    def heal(self, host: str) -> None:
        _ip("link", "set", self._names(host)[1], "up")

    def _names(self, host: str) -> tuple[str, str, str]:
        # Interface names are at most 15 characters.
        return f"ty{self.tag}{host}", f"to{self.tag}{host}"[:15], f"ti{self.tag}{host}"[:15]

    def close(self) -> None:
        for service in self.services:
            if service.alive():
                service.signal(9)
                service.wait(timeout=10)
        for host in self.hosts:
            ns, outside, _ = self._names(host)
            subprocess.run(["ip", "link", "del", outside], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
