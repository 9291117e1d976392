"""Helpers for testing t2i and its plugins (a pytest plugin: ``pytest -p t2i.testing``).

Fixtures:
    t2i_manager: a fresh :class:`~t2i.registry.PluginManager` with the core built-ins
        and the toy plugin, no entry points; it is also the process-wide manager
        for the test's duration.
"""

from __future__ import annotations

import pytest

from t2i.plugins import set_plugin_manager
from t2i.registry.manager import PluginManager


def make_manager(*plugins, entry_points: bool = False) -> PluginManager:
    """A manager with the core built-ins plus ``plugins`` (modules or objects)."""
    from t2i import builtins

    manager = PluginManager()
    manager.register_plugin(builtins, "builtins", version="test", source="t2i")
    for plugin in plugins:
        manager.register_plugin(plugin, getattr(plugin, "__name__", None))
    if entry_points:
        manager.load_entry_points()
    return manager


@pytest.fixture
def t2i_manager():
    """A fresh manager (built-ins + toy plugin), installed as the process-wide one."""
    from t2i.testing import toy_plugin

    manager = make_manager(toy_plugin)
    previous = set_plugin_manager(manager)
    toy_plugin.CALLS.clear()
    yield manager
    set_plugin_manager(previous)


def run_process_group(
    command: list[str], *, env: dict[str, str] | None = None, timeout: float = 180
) -> tuple[int, str, str]:
    """Run ``command`` (e.g. ``torchrun``) in its own process group; on timeout kill the
    whole group, workers included, so a hang leaves nothing behind.

    Returns ``(returncode, stdout, stderr)``.
    """
    import os
    import signal
    import subprocess

    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    return proc.returncode, stdout, stderr


def heavy_imports_of_discovery(
    plugins: str, *, check: str = "", modules: tuple[str, ...] = ("torch", "transformers")
) -> dict[str, bool]:
    """In a fresh interpreter with ``T2I_LOAD_PLUGINS=plugins``, load the plugin manager,
    run ``check`` (Python code with ``m``, the manager), and report which of ``modules``
    got imported: discovering plugins must import no model library."""
    import subprocess
    import sys

    code = (
        "import sys; from t2i.plugins import get_plugin_manager; m = get_plugin_manager(); "
        f"{check or 'pass'}; print(*[name in sys.modules for name in {list(modules)!r}])"
    )
    env = {"T2I_LOAD_PLUGINS": plugins, "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise AssertionError(out.stderr[-3000:])
    return dict(zip(modules, (v == "True" for v in out.stdout.split())))


def make_minilm_folder(folder, words=(), *, config=None):
    """A folder shaped like all-MiniLM-L6-v2's (``config.json``, ``model.safetensors``,
    tokenizer files) with random weights and a WordPiece vocabulary of ``words`` plus BERT's
    special tokens, for tests that must not need the real package. ``config`` (a
    ``BertConfig``) defaults to MiniLM's architecture. Returns the folder."""
    from pathlib import Path

    import torch
    from transformers import BertModel, BertTokenizerFast

    from t2i.text.minilm import minilm_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words) - {"[PAD]"})]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(
        str(folder)
    )
    config = config or minilm_config(len(vocab))
    config.vocab_size = len(vocab)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    torch.random.set_rng_state(generator_state)
    return folder


def judged_right(prompt: str, images) -> list[bool]:
    """Per image: does the shapes judge read every attribute ``prompt`` states?"""
    from t2i.shapes.captions import parse_caption
    from t2i.shapes.judge import load_judge
    from t2i.shapes.metrics import attribute_matches

    stated = parse_caption(prompt)
    return [all(attribute_matches(stated, r).values()) for r in load_judge().read(images)]
