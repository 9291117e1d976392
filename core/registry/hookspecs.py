"""Hook specifications of t2i (pluggy project ``t2i``).

Every registration hook receives a typed :class:`~t2i.registry.registrar.Registrar`
bound to its kind and to the calling plugin. Register *factories*, not instances:
listing plugins never loads weights. A plugin module implements any subset::

    from t2i.registry import hookimpl

    @hookimpl
    def t2i_register_samplers(register):
        register("my_sampler", MySampler, aliases=("My Sampler",))
"""

from __future__ import annotations

import pluggy

PROJECT = "t2i"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def t2i_register_tokenizers(register):
    """Register tokenizers: text -> :class:`~t2i.payloads.Tokens` (a ``Tokenizer``).

    Example::

        from t2i.registry import hookimpl
        from t2i.testing.toy_plugin import CharTokenizer

        @hookimpl
        def t2i_register_tokenizers(register):
            register("my.chars", CharTokenizer, aliases=("chars",))
    """


@hookspec
def t2i_register_text_encoders(register):
    """Register text encoders: :class:`~t2i.payloads.Tokens` -> :class:`~t2i.payloads.Conditioning`.

    Example::

        from t2i.registry import hookimpl
        from t2i.testing.toy_plugin import EmbedEncoder

        @hookimpl
        def t2i_register_text_encoders(register):
            register("my.embed", EmbedEncoder)
    """


@hookspec
def t2i_register_denoisers(register):
    """Register denoisers: the learned model a sampling node calls.

    One contract per generation shape (:mod:`t2i.contracts`): a diffusion denoiser
    ``D(x, sigma, cond) -> x0``, a token predictor ``(tokens, cond, cache) -> (logits,
    cache)``, or a generator ``G(z, cond) -> image``. Declare which with a
    ``model_contract`` attribute on the factory or ``register(..., contract=...)``, so a
    recipe that pairs it with the wrong sampler or guidance is refused when built.

    Example::

        from t2i.contracts import DIFFUSION
        from t2i.registry import hookimpl
        from t2i.testing.toy_plugin import ToyDenoiser

        @hookimpl
        def t2i_register_denoisers(register):
            register("my.denoiser", lambda: ToyDenoiser(), contract=DIFFUSION)
    """


@hookspec
def t2i_register_samplers(register):
    """Register samplers: ``sample(job)`` for one generation shape.

    A diffusion sampler takes a :class:`~t2i.contracts.DiffusionJob`, a token sampler a
    :class:`~t2i.contracts.TokenJob`, a single-pass sampler a
    :class:`~t2i.contracts.GeneratorJob`; each says which with ``model_contract``.

    Example::

        from t2i.diffusion.sampler import DiffusionSampler
        from t2i.diffusion.sampling import sample_euler
        from t2i.registry import hookimpl

        def make_euler():
            return DiffusionSampler(sample_euler, name="my.euler", default_schedule="karras")

        make_euler.model_contract = "diffusion"
        make_euler.default_schedule = "karras"

        @hookimpl
        def t2i_register_samplers(register):
            register("my.euler", make_euler, aliases=("My Euler",))
    """


@hookspec
def t2i_register_schedules(register):
    """Register sigma schedules: factories of objects with ``get_sigmas(model, steps)``.

    Example::

        from t2i.diffusion.schedules.named import KarrasSchedule
        from t2i.registry import hookimpl

        @hookimpl
        def t2i_register_schedules(register):
            register("my.karras5", lambda: KarrasSchedule(rho=5.0), aliases=("Karras 5",))
    """


@hookspec
def t2i_register_guidance(register):
    """Register guidance: objects with ``wrap(model, uncond=..., scale=...)`` that declare
    the model contract they wrap (``model_contract``; None fits any).

    Example::

        from t2i.diffusion.guidance import DynamicThresholding
        from t2i.registry import hookimpl

        @hookimpl
        def t2i_register_guidance(register):
            register(
                "my.dynamic",
                lambda: DynamicThresholding(percentile=0.99),
                contract="diffusion",
            )
    """


@hookspec
def t2i_register_decoders(register):
    """Register decoders: sample -> pixels (VAE, dVAE, identity, super-resolution).

    A decoder says its latent ``channels`` and ``factor``; the graph's ``EmptyLatent``
    takes the sample's shape from it.

    Example::

        from t2i.registry import hookimpl
        from t2i.testing.toy_plugin import Identity

        @hookimpl
        def t2i_register_decoders(register):
            register("my.pixels", Identity)
    """


@hookspec
def t2i_register_recipes(register):
    """Register recipes: ``factory(**options) -> Recipe``, which builds a graph.

    ``default=True`` marks an embedded default model: ``t2i generate`` runs it when no
    ``--recipe`` is given.

    Example::

        from t2i.recipe import diffusion_recipe
        from t2i.registry import hookimpl

        def my_recipe():
            return diffusion_recipe(
                tokenizer="toy.chars",
                text_encoder="toy.embed",
                denoiser="toy.denoiser",
                decoder="toy.identity",
                size_multiple=1,
                defaults={"width": 8, "height": 8, "steps": 2},
            )

        @hookimpl
        def t2i_register_recipes(register):
            register("my-recipe", my_recipe, default=True)
    """


@hookspec
def t2i_register_nodes(register):
    """Register graph node types: :class:`~t2i.graph.node.NodeType` subclasses.

    Example::

        from t2i.registry import hookimpl
        from t2i.shapes.oracle import RenderPrompt

        @hookimpl
        def t2i_register_nodes(register):
            register("My.RenderPrompt", RenderPrompt)
    """


@hookspec
def t2i_register_trainers(register):
    """Register trainers: :class:`~t2i.training.Trainer` subclasses, ``t2i train NAME``.

    A trainer runs its family on the core's resumable loop (:func:`t2i.training.train`);
    the core builds its command from the loop options every trainer shares and the
    family's own ``options``, whose values ``run(config, out, **options)`` receives.

    Example::

        from t2i.registry import hookimpl
        from t2i.testing.toy_training import build_toy
        from t2i.training import Trainer, TrainerOption, train

        class MyTrainer(Trainer):
            "Fit the toy regression on the core's loop."

            options = (TrainerOption("--rows", int, 256, help="Rows of the data set."),)

            def run(self, config, out, *, rows):
                model, data = build_toy(rows, seed=config.seed)
                return train(model, data, config, out).save(out / "model")

        @hookimpl
        def t2i_register_trainers(register):
            register("my-toy", MyTrainer)
    """


@hookspec
def t2i_register_commands(cli):
    """Add commands to the ``t2i`` command line (simonw/llm's ``register_commands``).

    ``cli`` is the root :class:`click.Group`; add commands or groups to it. Called once,
    when the command line starts, for every loaded plugin; a plugin whose hook raises is
    reported by ``t2i plugins`` and the others' commands still mount.

    Example::

        import click

        from t2i.registry import hookimpl

        @hookimpl
        def t2i_register_commands(cli):
            @cli.command()
            def hello():
                click.echo("hello from my plugin")
    """


REGISTRATION_HOOKS: dict[str, str] = {
    "tokenizer": "t2i_register_tokenizers",
    "text_encoder": "t2i_register_text_encoders",
    "denoiser": "t2i_register_denoisers",
    "sampler": "t2i_register_samplers",
    "schedule": "t2i_register_schedules",
    "guidance": "t2i_register_guidance",
    "decoder": "t2i_register_decoders",
    "recipe": "t2i_register_recipes",
    "node": "t2i_register_nodes",
    "trainer": "t2i_register_trainers",
}
"""Kind -> the hook that registers it."""
