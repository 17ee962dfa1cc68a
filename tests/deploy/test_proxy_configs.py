"""`nginx -t` and `haproxy -c` accept the shipped configs, which keep the settings SSE needs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.deploy import proxies
from tests.integration.processes import free_port


def _need(binary: str) -> None:
    if not proxies.have(binary):
        pytest.skip(f"{binary} is not installed (scripts/test-deps.sh installs it)")


def test_nginx_accepts_the_shipped_site(tmp_path: Path) -> None:
    _need(proxies.NGINX)
    site = tmp_path / "tokenyard.conf"
    site.write_text(proxies.nginx_site(8080, [18001, 18002]))
    result = subprocess.run(
        proxies.nginx_command(proxies.nginx_main(tmp_path, site), "-t"), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_accepts_the_site_unmodified_where_the_gateway_names_resolve(tmp_path: Path) -> None:
    """The shipped file byte for byte, with gateway-1/gateway-2 resolved by a private /etc/hosts
    (a mount namespace of this test only, as in a Compose network)."""
    _need(proxies.NGINX)
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "--mount", "true"], capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip("needs `unshare --mount` (root) to give the test its own /etc/hosts")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost gateway-1 gateway-2\n")
    main = proxies.nginx_main(tmp_path, proxies.NGINX_CONF)
    check = shlex.join(proxies.nginx_command(main, "-t"))
    result = subprocess.run(
        [unshare, "--mount", "sh", "-c", f"mount --bind {hosts} /etc/hosts && {check}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_haproxy_accepts_the_shipped_config_unmodified() -> None:
    _need(proxies.HAPROXY)
    result = subprocess.run([proxies.HAPROXY, "-c", "-f", str(proxies.HAPROXY_CFG)], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Configuration file is valid" in output
    # The gateway names resolve only inside Compose; anything else that HAProxy warns about is a bug.
    warnings = [line for line in output.splitlines() if "[WARNING]" in line]
    assert all("could not resolve address 'gateway-" in line for line in warnings), warnings


def test_nginx_site_keeps_the_streaming_settings() -> None:
    text = proxies.NGINX_CONF.read_text()
    for directive in (
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_buffering off;",
        "proxy_cache off;",
        "gzip off;",
        "proxy_read_timeout 1h;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    ):
        assert directive in text, directive
    assert "user root" not in text
    assert re.search(r"proxy_next_upstream [^;]*\berror\b", text)


def test_haproxy_checks_health_and_retries_refused_connections() -> None:
    text = proxies.HAPROXY_CFG.read_text()
    assert "option httpchk GET /health" in text
    assert re.search(r"retry-on [^\n]*conn-failure", text)
    assert "option forwardfor" in text
    assert re.search(r"timeout server +1h", text)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_no_gateway_up_is_an_openai_shaped_503(kind: str, tmp_path: Path) -> None:
    """Both gateways down: the proxy itself answers in OpenAI's error shape with Retry-After."""
    _need(proxies.NGINX if kind == "nginx" else proxies.HAPROXY)
    listen, dead = free_port(), [free_port(), free_port()]  # nothing listens on the gateway ports
    if kind == "nginx":
        site = tmp_path / "tokenyard.conf"
        site.write_text(proxies.nginx_site(listen, dead))
        command = proxies.nginx_command(proxies.nginx_main(tmp_path, site))
    else:
        config = tmp_path / "haproxy.cfg"
        config.write_text(proxies.haproxy_config(listen, dead))
        command = [proxies.HAPROXY, "-db", "-f", str(config)]
    proxy = proxies.Proxy(command, tmp_path / f"{kind}.log")
    try:
        proxy.start(f"http://127.0.0.1:{listen}", expect_status=503)
        response = httpx.post(f"http://127.0.0.1:{listen}/v1/chat/completions", json={"model": "m"}, timeout=10)
    finally:
        proxy.stop()
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["retry-after"] == "2"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "no_gateway"
