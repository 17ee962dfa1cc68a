"""The shipped nginx and HAProxy configs, run for real on loopback in front of test gateways.

The only change made to a shipped file is where it listens and where its gateways are: the
`listen`/`bind` line and the two gateway `server` lines are replaced, each exactly once (a test
fails if the shipped file no longer has them), so every other directive is tested as shipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.integration.processes import wait_until

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "deploy" / "nginx" / "tokenyard.conf"
HAPROXY_CFG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def have(binary: str) -> bool:
    return Path(binary).is_file() and os.access(binary, os.X_OK)


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(f"expected exactly one match of {pattern!r} in the shipped config, found {count}")
    return new


def nginx_site(listen_port: int, gateway_ports: list[int]) -> str:
    """deploy/nginx/tokenyard.conf with loopback addresses."""
    text = NGINX_CONF.read_text()
    text = _replace_once(text, r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{listen_port};")
    for number, port in enumerate(gateway_ports, start=1):
        text = _replace_once(text, rf"server gateway-{number}:8000", f"server 127.0.0.1:{port}")
    return text


def nginx_main(directory: Path, site: Path) -> Path:
    """A minimal nginx.conf that includes the site; every writable path inside `directory`.

    As root, nginx would switch its workers to `nobody`, who cannot enter pytest's private temp
    folder; the test's own main file (never the shipped site) keeps them as the current user.
    """
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / sub).mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = directory / "nginx.conf"
    main.write_text(
        f"{user}worker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        # When each request ended, which gateway served it and how long it took, for the drain checks.
        "    log_format lb '$msec $upstream_addr $status $request_time';\n"
        f"    access_log {directory}/access.log lb;\n"
        f"    client_body_temp_path {directory}/client_body;\n    proxy_temp_path {directory}/proxy;\n"
        f"    fastcgi_temp_path {directory}/fastcgi;\n    uwsgi_temp_path {directory}/uwsgi;\n"
        f"    scgi_temp_path {directory}/scgi;\n"
        f"    include {site};\n"
        "}\n"
    )
    return main


def nginx_command(main: Path, *extra: str) -> list[str]:
    prefix = f"{main.parent}/"
    return [NGINX, "-p", prefix, "-e", str(main.parent / "error.log"), "-c", str(main), "-g", "daemon off;", *extra]


def haproxy_config(listen_port: int, gateway_ports: list[int]) -> str:
    """deploy/haproxy/haproxy.cfg with loopback addresses."""
    text = HAPROXY_CFG.read_text()
    text = _replace_once(text, r"^(\s*)bind :80$", rf"\1bind 127.0.0.1:{listen_port}")
    for number, port in enumerate(gateway_ports, start=1):
        text = _replace_once(
            text, rf"server gateway-{number} gateway-{number}:8000", f"server g{number} 127.0.0.1:{port}"
        )
    return text


class Proxy:
    """nginx or HAProxy in the foreground, stopped (and waited for) by `stop`."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.command = command
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, url: str, expect_status: int = 200) -> Proxy:
        """Start and wait until `url`/health answers `expect_status` through the proxy."""
        import httpx

        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"proxy exited: {self.logs()}")
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == expect_status
            except httpx.HTTPError:
                return False

        assert wait_until(up, timeout=15), self.logs()
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
