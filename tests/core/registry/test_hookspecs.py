"""Every hook has a docstring with an example, and a test of its own in this file."""

import inspect
import sys

import pytest

from t2i.registry import REGISTRATION_HOOKS, hookimpl, hookspecs
from t2i.testing import make_manager

HOOKS = [n for n, f in vars(hookspecs).items() if n.startswith("t2i_") and callable(f)]


def test_every_hook_is_prefixed_and_documented_with_an_example():
    assert len(HOOKS) >= 9
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc, f"hook {name} has no docstring"
        assert "Example::" in doc and "@hookimpl" in doc, f"hook {name} has no example"


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


def test_hook_register_trainers():
    import click

    cmd = click.Command("t", callback=lambda: None)
    assert _register_one("trainer", "t.trainer", lambda: cmd).create() is cmd
