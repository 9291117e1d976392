"""Fixtures of the server tests: a live toy server per test module."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_live import live_server, toy_manager


@pytest.fixture(scope="module")
def toy_server():
    """A server of the toy recipes, toy-diffusion selected, two models kept."""
    with live_server(toy_manager(), recipe="toy-diffusion", max_models=2) as live:
        yield live
