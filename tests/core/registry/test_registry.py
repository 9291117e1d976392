import pytest

from t2i.registry import (
    ComponentRegistry,
    DuplicateComponentError,
    PluginLoadError,
    PluginManager,
    Registrar,
    UnknownComponentError,
    hookimpl,
)


def factory():
    return object()


def test_register_and_lookup_by_alias_case_and_separators():
    reg = ComponentRegistry()
    Registrar(reg, "sampler", "p1")("dpmpp_2m", factory, aliases=("DPM++ 2M",))
    assert reg.get("sampler", "DPM++ 2M").name == "dpmpp_2m"
    assert reg.get("sampler", "dpm++ 2m").name == "dpmpp_2m"
    assert reg.get("sampler", "DPMPP-2M").plugin == "p1"


def test_duplicate_names_both_plugins():
    reg = ComponentRegistry()
    Registrar(reg, "sampler", "alpha")("euler", factory)
    with pytest.raises(DuplicateComponentError) as err:
        Registrar(reg, "sampler", "beta")("Euler", factory)
    assert "alpha" in str(err.value) and "beta" in str(err.value)
    assert "replaces" in str(err.value)


def test_duplicate_alias_is_a_duplicate():
    reg = ComponentRegistry()
    Registrar(reg, "sampler", "alpha")("euler", factory, aliases=("E",))
    with pytest.raises(DuplicateComponentError):
        Registrar(reg, "sampler", "beta")("other", factory, aliases=("e",))


def test_replaces_overrides_on_purpose():
    reg = ComponentRegistry()
    Registrar(reg, "decoder", "alpha")("vae", factory, aliases=("VAE",))
    new = lambda: "new"  # noqa: E731
    Registrar(reg, "decoder", "beta")("vae", new, replaces="vae")
    assert reg.get("decoder", "vae").plugin == "beta"
    assert reg.create("decoder", "vae") == "new"
    assert not reg.has("decoder", "VAE_") and reg.has("decoder", "vae")


def test_unknown_lists_close_matches_and_all():
    reg = ComponentRegistry()
    for name in ("euler", "euler_ancestral", "heun"):
        Registrar(reg, "sampler", "core")(name, factory)
    with pytest.raises(UnknownComponentError) as err:
        reg.get("sampler", "eulr")
    msg = str(err.value)
    assert "did you mean 'euler'" in msg and "heun" in msg
    assert err.value.close[0] == "euler"


def test_unknown_kind_and_bad_factory():
    reg = ComponentRegistry()
    with pytest.raises(ValueError, match="kinds are"):
        reg.names("sampling")
    with pytest.raises(TypeError, match="callable"):
        Registrar(reg, "sampler", "p")("x", 3)


class Good:
    @hookimpl
    def t2i_register_samplers(self, register):
        register("good_sampler", factory)


class Broken:
    @hookimpl
    def t2i_register_samplers(self, register):
        register("half", factory)
        raise RuntimeError("boom in registration")


class Misspelled:
    @hookimpl
    def t2i_register_sampler(self, register):  # missing 's': not a hook
        register("x", factory)


def test_broken_plugin_is_recorded_and_rolled_back(monkeypatch):
    monkeypatch.delenv("T2I_STRICT_PLUGINS", raising=False)
    pm = PluginManager()
    pm.register_plugin(Good(), "good")
    rec = pm.register_plugin(Broken(), "broken")
    assert rec.status == "failed" and "boom in registration" in rec.error
    assert pm.registry.has("sampler", "good_sampler")
    assert not pm.registry.has("sampler", "half")  # nothing half-registered


def test_misspelled_hook_is_rejected_by_check_pending(monkeypatch):
    monkeypatch.delenv("T2I_STRICT_PLUGINS", raising=False)
    pm = PluginManager()
    rec = pm.register_plugin(Misspelled(), "typo")
    assert rec.status == "failed" and "t2i_register_sampler" in rec.error


def test_strict_mode_is_fatal(monkeypatch):
    monkeypatch.setenv("T2I_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="broken"):
        PluginManager().register_plugin(Broken(), "broken")


class _EP:
    def __init__(self, name, obj=None, error=None):
        self.name, self.value, self._obj, self._error = name, f"mod:{name}", obj, error
        self.dist = None

    def load(self):
        if self._error:
            raise self._error
        return self._obj


def _fake_entry_points(monkeypatch, eps):
    import t2i.registry.manager as manager

    monkeypatch.setattr(manager.md, "entry_points", lambda group: eps if group == "t2i" else [])


def test_entry_point_import_failure_isolated(monkeypatch):
    monkeypatch.delenv("T2I_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("T2I_LOAD_PLUGINS", raising=False)
    _fake_entry_points(monkeypatch, [_EP("good", Good()), _EP("bad", error=ImportError("no deps"))])
    pm = PluginManager()
    pm.load_entry_points()
    assert pm.records["good"].status == "loaded"
    assert pm.records["bad"].status == "failed" and "no deps" in pm.records["bad"].error


def test_allow_list_and_disable(monkeypatch):
    _fake_entry_points(monkeypatch, [_EP("good", Good()), _EP("other", Good())])
    monkeypatch.setenv("T2I_LOAD_PLUGINS", "good")
    pm = PluginManager()
    pm.load_entry_points()
    assert pm.records["good"].status == "loaded" and pm.records["other"].status == "disabled"
    monkeypatch.delenv("T2I_LOAD_PLUGINS")
    monkeypatch.setenv("T2I_DISABLE_PLUGINS", "good")
    pm = PluginManager()
    pm.load_entry_points()
    assert pm.records["good"].status == "disabled" and pm.records["other"].status == "loaded"
