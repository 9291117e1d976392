"""Issue 22: bad input at the command line exits 2 with a message naming the file; a plugin
that calls ``sys.exit`` (or raises any ``BaseException`` but ``KeyboardInterrupt``) at import
or in a hook is recorded like any other failure and ``t2i plugins`` lists it."""

from __future__ import annotations

import json
import sys
import types

import pytest
from click.testing import CliRunner

from t2i.cli.main import cli
from t2i.plugins import set_plugin_manager
from t2i.registry import PluginManager, hookimpl
from t2i.registry import manager as manager_module
from t2i.testing import make_manager, toy_plugin


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[1, 2]", "must be an object"),
        (b'{"nodes": ', "not valid JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[" * 100_000, "nests too deeply"),
        (b'{"nodes": {"a": {"type": 3}}}', "'type' must be a node type name"),
        (b'{"nodes": {"a": {"type": "Nope"}}}', "unknown node"),
        (b'{"nodes": {}, "meta": {"output": 5}}', "meta.output"),
    ],
)
def test_t2i_run_malformed_graph_files_exit_2_naming_the_file(
    t2i_manager, tmp_path, content, needle
):
    path = tmp_path / "graph.json"
    path.write_bytes(content)
    out = invoke("run", str(path), "-o", str(tmp_path / "out"))
    assert out.exit_code == 2, out.output
    assert needle in out.output and str(path) in out.output


def test_a_node_that_refuses_a_checkpoint_is_a_usage_error(t2i_manager, tmp_path):
    from t2i import Engine

    data = Engine.build("toy-gan").recipe.graph_dict()
    data["nodes"]["denoiser"]["params"]["options"] = {"nope": 1}
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    out = invoke("run", str(path), "-o", str(tmp_path / "out"))
    assert out.exit_code == 2 and "refuses its options" in out.output


class _ExitsInHook:
    @hookimpl
    def t2i_register_samplers(self, register):
        sys.exit(3)


class _InterruptsInHook:
    @hookimpl
    def t2i_register_samplers(self, register):
        raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def _lenient_plugins(monkeypatch):
    monkeypatch.delenv("T2I_STRICT_PLUGINS", raising=False)  # CI sets it; these test records


def test_a_plugin_calling_sys_exit_in_a_hook_is_recorded():
    manager = make_manager(toy_plugin)
    record = manager.register_plugin(_ExitsInHook(), "exits")
    assert record.status == "failed" and record.error.startswith("SystemExit: 3")
    assert "sys.exit" in record.error
    assert manager.registry.has("sampler", "toy.euler")  # the others still load
    with pytest.raises(KeyboardInterrupt):
        manager.register_plugin(_InterruptsInHook(), "interrupts")


def test_strict_mode_makes_a_sys_exit_fatal_as_a_plugin_load_error(monkeypatch):
    from t2i.registry import PluginLoadError

    monkeypatch.setenv("T2I_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="SystemExit: 3"):
        make_manager(toy_plugin).register_plugin(_ExitsInHook(), "exits")


class _FakeEntryPoint:
    def __init__(self, name: str, load) -> None:
        self.name, self.value, self.dist, self._load = name, f"{name}_mod", None, load

    def load(self):
        return self._load()


def test_a_plugin_calling_sys_exit_at_import_is_listed_by_t2i_plugins(monkeypatch):
    def exits():
        sys.exit(3)

    def fine():
        return types.ModuleType("fine_plugin")

    points = [_FakeEntryPoint("exits_at_import", exits), _FakeEntryPoint("fine", fine)]
    monkeypatch.setattr(manager_module.md, "entry_points", lambda group: points)
    monkeypatch.delenv("T2I_LOAD_PLUGINS", raising=False)
    manager = PluginManager()
    manager.load_entry_points()
    assert manager.records["exits_at_import"].status == "failed"
    assert manager.records["fine"].status == "loaded"
    previous = set_plugin_manager(manager)
    try:
        out = invoke("plugins")
        assert out.exit_code == 0
        assert "exits_at_import" in out.output and "SystemExit: 3" in out.output
        listed = json.loads(invoke("plugins", "--json").output)
        assert {r["name"]: r["status"] for r in listed}["exits_at_import"] == "failed"
    finally:
        set_plugin_manager(previous)
