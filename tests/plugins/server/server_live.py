"""A live ``t2i serve`` on localhost: uvicorn in a thread on a free port (test helpers)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A running server: ``url``, ``app`` (its state at ``app.state.t2i``), ``port``."""

    def __init__(self, app, port: int, server, thread) -> None:
        self.app, self.port, self.server, self.thread = app, port, server, thread
        self.url = f"http://127.0.0.1:{port}"

    @property
    def state(self):
        return self.app.state.t2i


@contextlib.contextmanager
def live_server(manager, **settings):
    """Serve ``manager``'s recipes with ``settings`` until the block ends."""
    import uvicorn
    from t2i_server.app import create_app
    from t2i_server.settings import ServeSettings

    port = free_port()
    app = create_app(ServeSettings(port=port, **settings), manager)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(app, port, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def toy_manager():
    from t2i.testing import make_manager, toy_plugin

    return make_manager(toy_plugin)


def ldm_manager():
    """Built-ins, the toy plugin and the LDM family (skips when it is not installed)."""
    plugin = pytest.importorskip("t2i_ldm.plugin")
    from t2i.testing import make_manager, toy_plugin

    return make_manager(toy_plugin, plugin)
