"""Which recipes ``t2i compare`` runs, and the sweeps a recipe's request fields allow."""

from __future__ import annotations

import types

import pytest

from t2i.compare.figures import available
from t2i.compare.recipes import RecipeChoiceError, RecipeSpec, resolve_recipes
from t2i.compare.report import write_figures
from t2i.compare.run import TRUNCATION_PSI, CompareSettings, sweep_fields
from t2i.shapes import oracle


def test_named_recipes_with_paths_and_checkpoints(manager):
    specs = resolve_recipes(manager, ["toy-shapes=/w", "toy-ar"], ["toy-gan-shapes=/g"])
    assert specs == [
        RecipeSpec("toy-shapes", "/w"),
        RecipeSpec("toy-autoregressive", None),  # an alias, made canonical
        RecipeSpec("toy-gan-shapes", "/g"),
    ]


@pytest.mark.parametrize(
    ("recipes", "checkpoints", "message"),
    [
        (["nope"], [], "unknown recipe 'nope'"),
        (["toy-shapes="], [], "write RECIPE or RECIPE=PATH"),
        ([], ["toy-shapes"], "--checkpoint 'toy-shapes': write RECIPE=PATH"),
    ],
)
def test_bad_recipe_arguments_say_the_fix(manager, recipes, checkpoints, message):
    with pytest.raises(RecipeChoiceError, match=message):
        resolve_recipes(manager, recipes, checkpoints)


def test_the_oracle_is_left_out_unless_named():
    from t2i.testing import make_manager

    m = make_manager(oracle)
    with pytest.raises(RecipeChoiceError, match="no installed recipe has a shapes default"):
        resolve_recipes(m, [])
    assert resolve_recipes(m, ["shapes-oracle"]) == [RecipeSpec("shapes-oracle")]


def _pipe(bindings, **defaults):
    recipe = types.SimpleNamespace(bindings=dict.fromkeys(bindings, ()))
    return types.SimpleNamespace(recipe=recipe, defaults=defaults)


def test_sweeps_follow_the_fields_a_recipe_binds():
    s = CompareSettings(step_counts=(2, 4))
    assert sweep_fields(_pipe(["steps", "cfg_scale"]), "diffusion", s) == {"steps": (2, 4)}
    tokens = sweep_fields(_pipe(["steps", "temperature", "top_k"]), "tokens", s)
    assert set(tokens) == {"temperature", "top_k"}  # steps: diffusion recipes only
    gan = _pipe(["cfg_scale"], guidance="truncation")
    assert sweep_fields(gan, "single pass", s) == {"cfg_scale": TRUNCATION_PSI}
    assert sweep_fields(_pipe(["prompt"]), "other", s) == {}


def test_without_matplotlib_the_report_says_so(monkeypatch, tmp_path):
    import t2i.compare.figures as figures

    assert available()
    monkeypatch.setattr(figures, "available", lambda: False)
    assert "matplotlib is not installed" in write_figures([], tmp_path, "2")["note"]


def test_a_recipe_failing_while_measured_is_skipped_not_fatal(manager, monkeypatch):
    import t2i.compare.run as run

    def broken(*args, **kwargs):
        raise RuntimeError("judge exploded")

    monkeypatch.setattr(run, "_score", broken)
    settings = CompareSettings(n_prompts=2, n_seeds=1, batch_size=1)
    out = run.run_recipe(RecipeSpec("toy-shapes"), settings, None, manager)
    assert isinstance(out, run.Skipped)
    assert out.reason == "failed while measured: RuntimeError: judge exploded"
