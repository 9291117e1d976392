"""The core's own plugin: the graph's nodes, each generation shape's samplers, schedules,
guidance and nodes (diffusion, autoregressive tokens, single pass), and the frozen text
encoders the families share (``minilm``).

Registered through the same hooks as any third-party plugin, by :mod:`t2i.plugins`, and
by import path: loading the plugins imports no torch; a component's module is imported
when it is first made.
"""

from __future__ import annotations

from t2i.registry import hookimpl

CORE_NODES: tuple[tuple[str, str], ...] = (
    ("LoadTokenizer", "instantiate a registered tokenizer by name"),
    ("LoadTextEncoder", "instantiate a registered text encoder by name"),
    ("LoadDenoiser", "instantiate a registered denoiser by name"),
    ("LoadDecoder", "instantiate a registered decoder by name"),
    ("Tokenize", "text -> token ids (+ emphasis weights)"),
    ("EncodeText", "token ids -> conditioning"),
    ("EmptyLatent", "the shape and seeds of a batch to sample"),
    ("Guide", "model + conditioning + guidance -> GUIDED_MODEL"),
    ("Decode", "sample -> pixels"),
    ("EncodeImage", "pixels -> sample space (img2img)"),
    ("LoadImage", "a PIL image or a file -> IMAGE"),
    ("SaveImage", "write each image as PNG"),
    ("UpscaleLatent", "resize a sample in its own space (hires fix: the latent upscalers)"),
    ("UpscaleImage", "resize pixels (hires fix: Lanczos and the other PIL filters)"),
    ("PrepareInpaint", "init image + mask -> the image to encode and the MASK (A1111's)"),
    ("PasteInpaint", "generated image pasted back into the init image through the MASK"),
)
"""The graph's shape-agnostic nodes (:mod:`t2i.graph.nodes`), registered by import path."""


@hookimpl
def t2i_register_nodes(register):
    from t2i.autoregressive import registration as autoregressive
    from t2i.diffusion import registration as diffusion
    from t2i.registry.lazy import lazy
    from t2i.single_pass import registration as single_pass

    for name, description in CORE_NODES:
        register(name, lazy(f"t2i.graph.nodes:{name}"), description=description)
    diffusion.register_nodes(register)
    autoregressive.register_nodes(register)
    single_pass.register_nodes(register)


@hookimpl
def t2i_register_samplers(register):
    from t2i.autoregressive.registration import register_samplers as tokens
    from t2i.diffusion.registration import register_samplers as diffusion
    from t2i.single_pass.registration import register_samplers as single_pass

    diffusion(register)
    tokens(register)
    single_pass(register)


@hookimpl
def t2i_register_schedules(register):
    from t2i.diffusion.registration import register_schedules

    register_schedules(register)


@hookimpl
def t2i_register_guidance(register):
    from t2i.autoregressive.registration import register_guidance as tokens
    from t2i.diffusion.registration import register_guidance as diffusion
    from t2i.single_pass.registration import register_guidance as single_pass

    diffusion(register)
    tokens(register)
    single_pass(register)


@hookimpl
def t2i_register_tokenizers(register):
    from t2i.text.registration import register_tokenizers

    register_tokenizers(register)


@hookimpl
def t2i_register_text_encoders(register):
    from t2i.text.registration import register_text_encoders

    register_text_encoders(register)
