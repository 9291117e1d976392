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
    """Register tokenizers: text -> :class:`~t2i.payloads.Tokens`.

    Example::

        @hookimpl
        def t2i_register_tokenizers(register):
            register("ldm.clip", lambda **kw: ClipTokenizer.from_folder(**kw))
    """


@hookspec
def t2i_register_text_encoders(register):
    """Register text encoders: :class:`~t2i.payloads.Tokens` -> :class:`~t2i.payloads.Conditioning`.

    Example::

        @hookimpl
        def t2i_register_text_encoders(register):
            register("ldm.clip_l", ClipTextEncoder, aliases=("clip-l",))
    """


@hookspec
def t2i_register_denoisers(register):
    """Register denoisers: the learned model one sampler step calls.

    A diffusion denoiser follows ``D(x, sigma, cond) -> x0``
    (:class:`~t2i.contracts.KarrasDenoiser`); a token predictor returns logits;
    a GAN generator maps ``z`` to an image in one pass.

    Example::

        @hookimpl
        def t2i_register_denoisers(register):
            register("ldm.unet", load_unet_denoiser)
    """


@hookspec
def t2i_register_samplers(register):
    """Register samplers: objects with ``sample(job: SampleJob)``.

    Example::

        @hookimpl
        def t2i_register_samplers(register):
            register("euler", lambda: DiffusionSampler(sample_euler), aliases=("Euler",))
    """


@hookspec
def t2i_register_schedules(register):
    """Register sigma schedules: ``get_sigmas(model, steps) -> Tensor`` factories.

    Example::

        @hookimpl
        def t2i_register_schedules(register):
            register("karras", lambda: KarrasSchedule(rho=7.0), aliases=("Karras",))
    """


@hookspec
def t2i_register_guidance(register):
    """Register guidance: objects with ``wrap(model, uncond=..., scale=...)``.

    Example::

        @hookimpl
        def t2i_register_guidance(register):
            register("cfg", ClassifierFreeGuidance)
    """


@hookspec
def t2i_register_decoders(register):
    """Register decoders: sample -> pixels (VAE, dVAE, identity, super-resolution).

    Example::

        @hookimpl
        def t2i_register_decoders(register):
            register("ldm.vae", load_vae_decoder)
    """


@hookspec
def t2i_register_recipes(register):
    """Register recipes: ``factory(**options) -> Recipe``, which builds a graph.

    Example::

        @hookimpl
        def t2i_register_recipes(register):
            register("ldm", build_ldm_recipe, aliases=("sd", "stable-diffusion"))
    """


@hookspec
def t2i_register_nodes(register):
    """Register graph node types: :class:`~t2i.graph.node.NodeType` subclasses.

    Example::

        @hookimpl
        def t2i_register_nodes(register):
            register("Ldm.EncodeImage", EncodeImage)
    """


@hookspec
def t2i_register_trainers(register):
    """Register trainers: factories returning a ``click.Command`` shown as ``t2i train NAME``.

    Example::

        @hookimpl
        def t2i_register_trainers(register):
            register("ldm", lambda: train_ldm_command)
    """


@hookspec
def t2i_register_commands(cli):
    """Add commands to the ``t2i`` command line (simonw/llm's ``register_commands``).

    ``cli`` is the root :class:`click.Group`; add commands or groups to it. Called once,
    when the command line starts, for every loaded plugin.

    Example::

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
