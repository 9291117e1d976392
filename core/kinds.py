"""The names of the registrable kinds and of the model contracts: a module of its own, so
that the registry and the command line know them without importing torch."""

KINDS: tuple[str, ...] = (
    "tokenizer",
    "text_encoder",
    "denoiser",
    "sampler",
    "schedule",
    "guidance",
    "decoder",
    "recipe",
    "node",
    "trainer",
)
"""Every registrable kind: DESIGN.md's component kinds, schedules, recipes, node types, trainers."""

DIFFUSION = "diffusion"
"""Model contract of :class:`t2i.contracts.DiffusionDenoiser`."""
TOKENS = "tokens"
"""Model contract of :class:`t2i.contracts.TokenPredictor`."""
GENERATOR = "generator"
"""Model contract of :class:`t2i.contracts.Generator`."""
MODEL_CONTRACTS: dict[str, str] = {
    DIFFUSION: "a diffusion denoiser D(x, sigma, cond) -> x0",
    TOKENS: "a token predictor (tokens, cond, cache) -> (logits, cache)",
    GENERATOR: "a single-pass generator G(z, cond) -> image",
}
"""Contract name -> what it is, for error messages."""
