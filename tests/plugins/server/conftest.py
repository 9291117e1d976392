"""Fixtures of the server tests: a live toy server per test module."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_live import live_server, toy_manager

STEP_SECONDS = 0.003
"""How long each toy denoiser call takes under ``slow_toy_steps``."""


@pytest.fixture(scope="module")
def toy_server():
    """A server of the toy recipes, toy-diffusion selected, two models kept."""
    with live_server(toy_manager(), recipe="toy-diffusion", max_models=2) as live:
        yield live


@pytest.fixture
def slow_toy_steps(monkeypatch):
    """Each toy denoiser call sleeps a few ms: a 1,000-step toy job takes ~0.2 s otherwise,
    only a few of a client's polls, so a test that watches, cancels or skips a running job
    raced the job's end. Patched on the class, so the live server's models slow down too."""
    import time

    from t2i.testing.toy_plugin import ToyDenoiser

    step = ToyDenoiser.forward

    def slow_step(self, *args, **kwargs):
        time.sleep(STEP_SECONDS)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(ToyDenoiser, "forward", slow_step)
