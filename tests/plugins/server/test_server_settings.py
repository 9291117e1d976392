"""t2i serve's bind rule, token auth (Bearer and Basic) and its one log line per request."""

import base64
import secrets
import time

import click
import pytest
import requests
import structlog
from click.testing import CliRunner
from server_live import live_server, toy_manager
from t2i_server import plugin
from t2i_server.settings import (
    TOKEN_ENV,
    InsecureBindError,
    ServeSettings,
    check_bind,
    is_local,
    token_from,
)


def test_local_hosts():
    assert all(is_local(h) for h in ("127.0.0.1", "localhost", "::1", "127.3.2.1"))
    assert not any(is_local(h) for h in ("0.0.0.0", "192.168.1.4", "::", "example.org"))


def test_non_local_bind_needs_a_token_or_insecure():
    check_bind(ServeSettings(host="127.0.0.1"))
    check_bind(ServeSettings(host="0.0.0.0", token="t"))
    check_bind(ServeSettings(host="0.0.0.0", insecure=True))
    with pytest.raises(InsecureBindError, match="anyone who can reach") as info:
        check_bind(ServeSettings(host="0.0.0.0"))
    assert "--token" in str(info.value) and "--insecure" in str(info.value)


def test_token_from_option_or_environment(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert token_from(None) == "from-env"
    assert token_from("given") == "given"
    monkeypatch.setenv(TOKEN_ENV, "")
    assert token_from(None) is None


def test_serve_command_refuses_a_public_bind_without_token(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    group = click.Group()
    plugin.t2i_register_commands(group)
    out = CliRunner().invoke(group, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert out.exit_code == 2
    assert "refusing to listen on 0.0.0.0:1 without a token" in out.output
    assert "--insecure" in out.output


def test_token_auth_bearer_and_basic():
    token = secrets.token_hex(8)
    with live_server(toy_manager(), recipe="toy-gan", token=token) as live:
        url = live.url + "/sdapi/v1/options"
        refused = requests.get(url)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert refused.json()["field"] == "Authorization"
        assert requests.get(live.url + "/", timeout=5).status_code == 401  # the page too
        assert requests.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = requests.get(url, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["sd_model_checkpoint"] == "toy-gan"
        assert requests.get(url, auth=("anyone", token)).status_code == 200
        assert requests.get(url, auth=("anyone", "wrong")).status_code == 401
        bad = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}
        assert requests.get(url, headers=bad).status_code == 401
        import webuiapi

        api = webuiapi.WebUIApi(port=live.port)
        api.set_auth("me", token)
        assert api.get_options()["sd_model_checkpoint"] == "toy-gan"


def test_one_log_line_per_request(toy_server):
    from t2i.logs import configure_logging

    configure_logging("info")  # what `t2i serve` sets up
    try:
        with structlog.testing.capture_logs() as logs:
            requests.get(toy_server.url + "/sdapi/v1/samplers")
            requests.get(toy_server.url + "/t2i/v1/jobs/nope")
            deadline = time.monotonic() + 5  # the server may log just after the reply
            while sum(e["event"] == "request" for e in logs) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        configure_logging("warning")
    lines = [e for e in logs if e["event"] == "request"]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("GET", "/sdapi/v1/samplers", 200),
        ("GET", "/t2i/v1/jobs/nope", 404),
    ]
    assert all(e["ms"] >= 0 and e["client"].startswith("127.0.0.1:") for e in lines)


@pytest.mark.slow
def test_t2i_serve_command_serves_the_page_and_the_api(tmp_path):
    """The real command in a subprocess, plugins from entry points, as a user starts it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from server_live import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("T2I_LOAD_PLUGINS", TOKEN_ENV)}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "t2i.cli.main", "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                page = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "t2i serve did not start"
                time.sleep(0.2)
        assert page.status_code == 200 and "<title>t2i</title>" in page.text
        assert requests.get(f"http://127.0.0.1:{port}/static/app.js").status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/docs").status_code == 200
        models = requests.get(f"http://127.0.0.1:{port}/sdapi/v1/sd-models", timeout=60).json()
        assert "ldm-shapes" in {m["title"] for m in models}
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert text.count("request") >= 4 and "path=/docs" in text and "status=200" in text
