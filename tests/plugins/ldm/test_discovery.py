"""Discovering the LDM plugin imports no model library: its components register by path."""

from t2i.testing import heavy_imports_of_discovery


def test_listing_the_ldm_plugin_imports_neither_torch_nor_transformers():
    check = (
        "r = m.records['ldm']; assert r.status == 'loaded', r.error; "
        "assert 'ldm-shapes' in m.registry.names('recipe')"
    )
    assert heavy_imports_of_discovery("ldm", check=check) == {
        "torch": False,
        "transformers": False,
    }
