"""``t2i compare``: every family's shapes default side by side on the shapes benchmark.

Modules, one job each: :mod:`~t2i.compare.recipes` (which recipes: asked of the registry),
:mod:`~t2i.compare.run` (build, evaluate, time, sweep one recipe, then all),
:mod:`~t2i.compare.scores` (per-prompt figures of an evaluation),
:mod:`~t2i.compare.stats` (bootstrap intervals over prompts, paired differences),
:mod:`~t2i.compare.measure` (peak memory, weights size, recorded training compute),
:mod:`~t2i.compare.figures` (matplotlib PNGs), :mod:`~t2i.compare.report` (the output folder,
``report.json``) and :mod:`~t2i.compare.markdown` (``report.md``). Family-agnostic: no plugin
is imported here; a recipe is reached through ``Engine.build`` only.
"""
