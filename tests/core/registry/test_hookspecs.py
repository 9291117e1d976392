"""Every hook has a docstring with an example that runs, and a test of its own in this file."""

import inspect
import sys
import textwrap
import types

import click
import pytest
from click.testing import CliRunner

from t2i.registry import REGISTRATION_HOOKS, hookimpl, hookspecs
from t2i.testing import make_manager, toy_plugin

HOOKS = [n for n, f in vars(hookspecs).items() if n.startswith("t2i_") and callable(f)]
KIND_OF = {hook: kind for kind, hook in REGISTRATION_HOOKS.items()}


def _example(hook: str) -> str:
    doc = inspect.getdoc(getattr(hookspecs, hook))
    block = doc.split("Example::", 1)[1]
    lines = [line for line in block.split("\n") if line.strip() == "" or line.startswith("    ")]
    return textwrap.dedent("\n".join(lines))


def _example_plugin(hook: str) -> types.ModuleType:
    module = types.ModuleType(f"example_{hook}")
    exec(compile(_example(hook), f"<{hook} example>", "exec"), module.__dict__)
    return module


def test_every_hook_is_prefixed_and_documented_with_an_example():
    assert len(HOOKS) >= 9
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc, f"hook {name} has no docstring"
        assert "Example::" in doc and "@hookimpl" in doc, f"hook {name} has no example"


@pytest.mark.parametrize("hook", [h for h in HOOKS if h in KIND_OF])
def test_every_registration_example_runs_and_its_components_load(hook):
    manager = make_manager(toy_plugin)
    record = manager.register_plugin(_example_plugin(hook), f"example-{hook}")
    assert record.status == "loaded", record.error
    kind = KIND_OF[hook]
    entries = [e for e in manager.registry.entries(kind) if e.plugin == record.name]
    assert entries, f"the {hook} example registered no {kind}"
    for entry in entries:
        created = entry.create()
        assert created is not None
        if kind == "recipe":
            from t2i import Engine

            image = Engine.build(entry.name, plugins=manager)("a cube", seed=1).images[0]
            assert image.size == (8, 8)


def test_the_commands_example_runs():
    manager = make_manager(_example_plugin("t2i_register_commands"))
    group = click.Group("t2i")
    manager.register_commands(group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0 and "hello from my plugin" in result.output


def test_every_hook_has_its_own_test():
    module = sys.modules[__name__]
    missing = [h for h in HOOKS if not hasattr(module, f"test_hook_{h[len('t2i_') :]}")]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def _register_one(kind, name, factory):
    hook = next(h for k, h in REGISTRATION_HOOKS.items() if k == kind)

    class Plugin:
        pass

    def impl(register):
        register(name, factory)

    setattr(Plugin, hook, staticmethod(hookimpl(impl)))
    manager = make_manager()
    manager.register_plugin(Plugin(), f"test-{kind}")
    entry = manager.registry.get(kind, name)
    assert entry.plugin == f"test-{kind}"
    return entry


@pytest.mark.parametrize("dummy", [None])
def test_hook_register_tokenizers(dummy):
    assert _register_one("tokenizer", "t.tok", lambda: "tok").create() == "tok"


def test_hook_register_text_encoders():
    assert _register_one("text_encoder", "t.enc", lambda: "enc").create() == "enc"


def test_hook_register_denoisers():
    assert _register_one("denoiser", "t.den", lambda: "den").create() == "den"


def test_hook_register_samplers():
    assert _register_one("sampler", "t.samp", lambda: "samp").create() == "samp"


def test_hook_register_schedules():
    assert _register_one("schedule", "t.sched", lambda: "sched").create() == "sched"


def test_hook_register_guidance():
    assert _register_one("guidance", "t.guid", lambda: "guid").create() == "guid"


def test_hook_register_decoders():
    assert _register_one("decoder", "t.dec", lambda: "dec").create() == "dec"


def test_hook_register_recipes():
    assert _register_one("recipe", "t.recipe", lambda: "r").create() == "r"


def test_hook_register_nodes():
    from t2i.graph import NodeType

    class N(NodeType):
        pass

    assert _register_one("node", "T.Node", lambda: N).create() is N


def test_hook_register_trainers(tmp_path):
    from t2i.testing.toy_training import build_toy
    from t2i.training import Trainer, TrainerOption, train
    from t2i.training.cli import train_group

    class OneStep(Trainer):
        """Train the toy regression for a step."""

        options = (TrainerOption("--rows", int, 16, help="Rows."),)
        defaults = {"steps": 1, "batch_size": 4}  # noqa: RUF012

        def run(self, config, out, *, rows):
            model, data = build_toy(rows, seed=config.seed)
            return train(model, data, config, out).save(out / "model")

    entry = _register_one("trainer", "t.trainer", OneStep)
    assert isinstance(entry.create(), OneStep) and entry.description == OneStep().description
    manager = make_manager()
    manager.registry.add("trainer", "one-step", OneStep, plugin="test")
    group = train_group(lambda: manager)
    listing = CliRunner().invoke(group, ["--help"]).output
    assert "one-step  Train the toy regression for a step." in listing
    result = CliRunner().invoke(group, ["one-step", "--out", str(tmp_path), "--rows", "8"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "model")
    assert (tmp_path / "one-step.state.pt").is_file() and (tmp_path / "model").is_dir()


def test_hook_register_commands(monkeypatch):
    monkeypatch.delenv("T2I_STRICT_PLUGINS", raising=False)

    class Good:
        @staticmethod
        @hookimpl
        def t2i_register_commands(cli):
            cli.add_command(click.Command("good", callback=lambda: click.echo("ok")))

    class Broken:
        @staticmethod
        @hookimpl
        def t2i_register_commands(cli):
            raise RuntimeError("cannot mount")

    manager = make_manager(Good(), Broken())
    group = click.Group("t2i")
    manager.register_commands(group)  # the broken plugin does not take the others down
    assert "good" in group.commands
    record = next(r for r in manager.records.values() if "cannot mount" in r.error)
    assert record.status == "failed"
    monkeypatch.setenv("T2I_STRICT_PLUGINS", "1")
    with pytest.raises(Exception, match="cannot mount"):
        manager.register_commands(click.Group("t2i"))


def test_a_plain_function_without_hookimpl_is_not_called():
    calls = []

    class Plugin:
        @staticmethod
        def t2i_register_samplers(register):  # no @hookimpl: pluggy does not call it
            calls.append(register)

    make_manager(Plugin())
    assert calls == []
