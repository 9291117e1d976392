"""A plugin of tiny random models that implements every contract of the core.

Used by t2i's own tests and by plugin authors as a working example:

- ``toy-diffusion``: iterative denoising (``D(x, sigma, cond) -> x0``) through the core's
  diffusion recipe, with a sampler of its own (``toy.euler``) beside the built-ins;
- ``toy-autoregressive``: a token predictor ``(tokens, cond, cache) -> (logits, cache)``
  with an explicit :class:`~t2i.contracts.KVCache`, sampled by the core's ``top_k``;
- ``toy-gan``: a single-pass generator ``G(z, cond) -> image``;
- ``toy-cascade``: two diffusion samplings, the second a super-resolution denoiser that
  receives the first's output as ``cond.image`` (noise-augmentation conditioning);
- the trainer ``toy`` (:mod:`t2i.testing.toy_training`) on the core's training loop.

All run through the same Engine, graph and executor, with no special case in the core.
Every component counts its calls in :data:`CALLS` so tests can prove caching; the
components that hold modules describe them with an :class:`~t2i.contracts.ExportSpec`.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn

from t2i.contracts import (
    DIFFUSION,
    GENERATOR,
    TOKENS,
    DiffusionJob,
    ExportedModule,
    ExportSpec,
    KVCache,
)
from t2i.graph.graph import Graph
from t2i.noise import seeded_noise
from t2i.payloads import Conditioning, Image, Latent, Tokens
from t2i.recipe import Recipe, diffusion_recipe
from t2i.registry import hookimpl
from t2i.testing.toy_training import t2i_register_trainers  # noqa: F401  (the trainer `toy`)

CALLS: Counter = Counter()
CACHE_LENGTHS: list[int] = []
"""The KV cache's length after each call of ``toy.transformer`` (tests prove reuse)."""
VOCAB, WIDTH, CONTEXT = 64, 16, 16


class CharTokenizer:
    """Characters -> ids mod 64, padded to 16; ``(word:w)`` is not parsed (toy)."""

    def __call__(self, texts):
        CALLS["tokenizer"] += 1
        ids = torch.zeros(len(texts), CONTEXT, dtype=torch.long)
        for i, t in enumerate(texts):
            codes = [ord(c) % VOCAB for c in t[:CONTEXT]]
            ids[i, : len(codes)] = torch.tensor(codes, dtype=torch.long)
        return Tokens(ids, torch.ones(ids.shape), ids != 0)


class EmbedEncoder(nn.Module):
    """Token ids -> per-token embeddings and their mean (the pooled vector)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, WIDTH)

    def forward(self, tokens: Tokens) -> Conditioning:
        CALLS["text_encoder"] += 1
        e = self.embed(tokens.ids)
        return Conditioning(e, e.mean(1))

    def export_spec(self) -> ExportSpec:
        ids = torch.zeros(1, CONTEXT, dtype=torch.long)
        return ExportSpec(
            (
                ExportedModule(
                    "text_encoder",
                    self.embed,
                    (ids,),
                    ("input_ids",),
                    ("embeds",),
                    {"input_ids": {0: "batch"}, "embeds": {0: "batch"}},
                ),
            )
        )


class ToyEpsModel(nn.Module):
    """A discrete-time epsilon model ``(x_in, t, context) -> eps``: conv + FiLM of the text."""

    def __init__(self, in_channels: int = 3, seed: int = 1):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(in_channels, 3, 3, padding=1)
        self.film = nn.Linear(WIDTH, 3)

    def forward(self, x, t, pooled):
        CALLS["denoiser"] += 1
        scale = self.film(pooled)[:, :, None, None]
        return torch.tanh(self.conv(x) + scale + t[:, None, None, None] / 1000)


def _adapter(model: nn.Module):
    from t2i.diffusion.sampling.denoisers import DiscreteDenoiser
    from t2i.diffusion.schedules import get_alphas_cumprod

    return DiscreteDenoiser(model, get_alphas_cumprod("scaled_linear", 1000))


class ToyDenoiser(nn.Module):
    """``D(x, sigma, cond) -> x0``: the toy eps model on SD's discrete schedule (1000 steps)."""

    model_contract = DIFFUSION
    export_name, in_channels, seed, example_size = "denoiser", 3, 1, 8

    def __init__(self):
        super().__init__()
        self.eps = ToyEpsModel(in_channels=self.in_channels, seed=self.seed)
        self.adapter = _adapter(self._predict)
        self.sigma_min, self.sigma_max = self.adapter.sigma_min, self.adapter.sigma_max
        self.sigmas = self.adapter.sigmas

    def _predict(self, x_in, t, cond: Conditioning):
        return self.eps(x_in, t, cond.pooled)

    def forward(self, x, sigma, cond):
        return self.adapter(x, sigma, cond)

    def loss(self, x0, cond, *, noise, sigma):
        """Per-sample ``(B,)`` epsilon MSE (a :class:`~t2i.contracts.TrainableDenoiser`)."""
        return self.adapter.loss(x0, cond, noise=noise, sigma=sigma)

    def export_spec(self) -> ExportSpec:
        size = self.example_size
        x, t = torch.zeros(1, self.in_channels, size, size), torch.zeros(1)
        axes = {
            "sample": {0: "batch", 2: "height", 3: "width"},
            "timestep": {0: "batch"},
            "pooled": {0: "batch"},
            "eps": {0: "batch", 2: "height", 3: "width"},
        }
        names = ("sample", "timestep", "pooled")
        exported = ExportedModule(
            self.export_name, self.eps, (x, t, torch.zeros(1, WIDTH)), names, ("eps",), axes
        )
        return ExportSpec((exported,))


class ToySuperRes(ToyDenoiser):
    """A super-resolution ``D(x, sigma, cond) -> x0`` that reads ``cond.image``.

    The low-resolution image is upsampled to ``x``'s size and noise-augmented at
    ``cond.image.noise_level`` (a fraction in [0, 1]) with noise from the image's seeds,
    then stacked with ``x`` as the eps model's input (Imagen's SR conditioning, toy-sized).
    """

    export_name, in_channels, seed, example_size = "super_res", 6, 5, 16

    def _predict(self, x_in, t, cond: Conditioning):
        if cond.image is None:
            raise ValueError("toy.super_res needs a low-resolution image (cond.image)")
        low = nn.functional.interpolate(cond.image.image, size=x_in.shape[-2:], mode="nearest")
        level = cond.image.noise_level.to(x_in.dtype)[:, None, None, None]
        seeds = cond.image.seeds or tuple(range(low.shape[0]))
        noise = seeded_noise(low.shape, seeds, device=low.device, dtype=low.dtype)
        aug = (1 - level) * low + level * noise
        return self.eps(torch.cat([x_in, aug], 1), t, cond.pooled)


class ToyEuler:
    """A third-party diffusion sampler: plain Euler over the job's sigmas (toy)."""

    model_contract = DIFFUSION

    def sample(self, job: DiffusionJob) -> Latent:
        sigmas = job.sigmas.tolist()
        x = seeded_noise(job.shape, job.seeds) * sigmas[0]
        for i in range(len(sigmas) - 1):
            s = torch.full((x.shape[0],), sigmas[i])
            d = (x - job.model(x, s, job.cond)) / sigmas[i]
            x = x + d * (sigmas[i + 1] - sigmas[i])
            if job.callback:
                job.callback(i + 1, len(sigmas) - 1)
        return Latent(x, seeds=job.seeds)


class Identity:
    """Pixel space in [-1, 1] -> [0, 1]."""

    factor, channels = 1, 3

    def decode(self, latent):
        CALLS["decoder"] += 1
        return Image(((latent.samples + 1) / 2).clamp(0, 1))

    def encode(self, image):
        return Latent(image.pixels * 2 - 1)


class TinyTransformer(nn.Module):
    """A :class:`~t2i.contracts.TokenPredictor`: one attention layer over image tokens.

    Each call appends the cache's length to :data:`CACHE_LENGTHS`.
    """

    model_contract = TOKENS

    def __init__(self, codebook: int = 8):
        super().__init__()
        torch.manual_seed(2)
        self.vocab_size, self.bos = codebook, codebook  # the last embedding is <bos>
        self.embed = nn.Embedding(codebook + 1, WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, codebook)

    def forward(self, tokens, cond, cache):
        """tokens ``(B, T)`` not yet cached -> logits ``(B, vocab)`` of the next, cache."""
        CALLS["transformer"] += 1
        h = self.embed(tokens) + cond.pooled[:, None]  # (B, T, W)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        cache = cache if cache is not None else KVCache(time_dim=1)
        k, v = cache.extend(0, k, v)
        att = torch.softmax(q[:, -1:] @ k.transpose(1, 2) / math.sqrt(WIDTH), -1)  # (B, 1, T)
        CACHE_LENGTHS.append(cache.length)
        return self.out((att @ v)[:, 0]), cache

    def export_spec(self) -> ExportSpec:
        return ExportSpec(
            (
                ExportedModule(
                    "token_embed",
                    self.embed,
                    (torch.zeros(1, 1, dtype=torch.long),),
                    ("tokens",),
                    ("h",),
                    {"tokens": {0: "batch", 1: "time"}, "h": {0: "batch", 1: "time"}},
                ),
                ExportedModule(
                    "qkv",
                    self.qkv,
                    (torch.zeros(1, 1, WIDTH),),
                    ("h",),
                    ("qkv",),
                    {"h": {0: "batch", 1: "time"}, "qkv": {0: "batch", 1: "time"}},
                ),
                ExportedModule(
                    "head",
                    self.out,
                    (torch.zeros(1, WIDTH),),
                    ("h",),
                    ("logits",),
                    {"h": {0: "batch"}, "logits": {0: "batch"}},
                ),
            )
        )


class Palette:
    """Token grid -> image: each token is a 4x4 patch of one of 8 colours."""

    factor, channels = 4, 1

    def __init__(self):
        torch.manual_seed(3)
        self.colours = torch.rand(8, 3)

    def decode(self, latent):
        ids = latent.samples[:, 0].long()  # (B, h, w)
        img = self.colours[ids].permute(0, 3, 1, 2)  # (B, 3, h, w)
        return Image(img.repeat_interleave(4, 2).repeat_interleave(4, 3))


class TinyGenerator(nn.Module):
    """A :class:`~t2i.contracts.Generator`: an MLP ``(z, pooled text) -> 3x16x16`` in [-1, 1]."""

    model_contract = GENERATOR

    def __init__(self, z_dim: int = 8):
        super().__init__()
        torch.manual_seed(4)
        self.z_dim = z_dim
        self.net = nn.Sequential(
            nn.Linear(z_dim + WIDTH, 64), nn.ReLU(), nn.Linear(64, 3 * 16 * 16)
        )

    def forward(self, z, cond):
        CALLS["generator"] += 1
        return torch.tanh(self.net(torch.cat([z, cond.pooled], -1))).view(-1, 3, 16, 16)

    def export_spec(self) -> ExportSpec:
        example = torch.zeros(1, self.z_dim + WIDTH)
        return ExportSpec(
            (
                ExportedModule(
                    "generator",
                    self.net,
                    (example,),
                    ("z_and_text",),
                    ("image",),
                    {"z_and_text": {0: "batch"}, "image": {0: "batch"}},
                ),
            )
        )


def _text_graph() -> tuple[Graph, dict]:
    """The prompt's side of every toy graph: tokenizer, encoder, prompt and negative."""
    g = Graph()
    tok = g.add("tokenizer", "LoadTokenizer", name="toy.chars")
    enc = g.add("text_encoder", "LoadTextEncoder", name="toy.embed")
    refs = {}
    for side in ("positive", "negative"):
        t = g.add(f"tokenize_{side}", "Tokenize", tokenizer=tok["tokenizer"], text="")
        c = g.add(
            f"encode_{side}", "EncodeText", text_encoder=enc["text_encoder"], tokens=t["tokens"]
        )
        refs[side] = c["conditioning"]
    return g, refs


TEXT_BINDINGS = {
    "prompt": ("tokenize_positive", "text"),
    "negative_prompt": ("tokenize_negative", "text"),
    "seed": ("empty", "seed"),
    "batch_size": ("empty", "batch_size"),
    "cfg_scale": ("guide", "cfg_scale"),
    "guidance": ("guide", "guidance"),
}


def autoregressive_recipe() -> Recipe:
    """text -> conditioning -> KV-cached token loop (SampleTokens) -> palette decoder."""
    g, text = _text_graph()
    model = g.add("denoiser", "LoadDenoiser", name="toy.transformer")
    dec = g.add("decoder", "LoadDecoder", name="toy.palette")
    e = g.add("empty", "EmptyLatent", decoder=dec["decoder"])
    guide = g.add(
        "guide",
        "Guide",
        model=model["model"],
        positive=text["positive"],
        negative=text["negative"],
        guidance="none",
    )
    s = g.add("sample", "SampleTokens", guided=guide["guided"], latent=e["latent"], top_k=4)
    g.add("decode", "Decode", decoder=dec["decoder"], samples=s["samples"])
    return Recipe(
        graph=g,
        output=g["decode"]["image"],
        size_multiple=4,
        bindings={
            **TEXT_BINDINGS,
            "width": ("empty", "width"),
            "height": ("empty", "height"),
            "sampler": ("sample", "sampler"),
            "temperature": ("sample", "temperature"),
            "top_k": ("sample", "top_k"),
            "top_p": ("sample", "top_p"),
        },
        defaults={
            "width": 16,
            "height": 16,
            "sampler": "top_k",
            "guidance": "none",
            "cfg_scale": 1.0,
        },
    )


def gan_recipe() -> Recipe:
    """text -> conditioning -> one generator pass (SampleOnce) -> identity decoder."""
    g, text = _text_graph()
    model = g.add("denoiser", "LoadDenoiser", name="toy.generator")
    dec = g.add("decoder", "LoadDecoder", name="toy.identity")
    e = g.add("empty", "EmptyLatent", channels=8, factor=0)
    guide = g.add(
        "guide",
        "Guide",
        model=model["model"],
        positive=text["positive"],
        guidance="truncation",
        cfg_scale=1.0,
    )
    s = g.add("sample", "SampleOnce", guided=guide["guided"], latent=e["latent"])
    g.add("decode", "Decode", decoder=dec["decoder"], samples=s["samples"])
    return Recipe(
        graph=g,
        output=g["decode"]["image"],
        size_multiple=1,
        bindings={**TEXT_BINDINGS, "sampler": ("sample", "sampler")},
        defaults={
            "width": 16,
            "height": 16,
            "sampler": "single_pass",
            "guidance": "truncation",
            "cfg_scale": 1.0,
        },
    )


def cascade_recipe(base_size: int = 8) -> Recipe:
    """Two diffusion samplings: a base stage at ``base_size`` px, then ``toy.super_res``
    conditioned on its output through ``LowResCondition`` (noise level bound to
    ``noise_level``)."""
    g, text = _text_graph()
    dec = g.add("decoder", "LoadDecoder", name="toy.identity")
    for stage, denoiser in (("base", "toy.denoiser"), ("sr", "toy.super_res")):
        model = g.add(f"{stage}_model", "LoadDenoiser", name=denoiser)
        links = {}
        if stage == "sr":
            low = g.add("low_res", "LowResCondition", samples=g["base_sample"]["samples"])
            links["image_condition"] = low["image_condition"]
        sigmas = g.add(f"{stage}_sigmas", "Sigmas", model=model["model"], schedule="karras")
        guide = g.add(
            f"{stage}_guide",
            "Guide",
            model=model["model"],
            positive=text["positive"],
            negative=text["negative"],
            **links,
        )
        size = {"width": base_size, "height": base_size} if stage == "base" else {}
        e = g.add(f"{stage}_empty", "EmptyLatent", decoder=dec["decoder"], **size)
        g.add(
            f"{stage}_sample",
            "SampleDiffusion",
            guided=guide["guided"],
            sigmas=sigmas["sigmas"],
            latent=e["latent"],
            sampler="euler",
        )
    g.add("decode", "Decode", decoder=dec["decoder"], samples=g["sr_sample"]["samples"])
    both = lambda p: (("base_" + p[0], p[1]), ("sr_" + p[0], p[1]))  # noqa: E731
    return Recipe(
        graph=g,
        output=g["decode"]["image"],
        size_multiple=1,
        bindings={
            "prompt": ("tokenize_positive", "text"),
            "negative_prompt": ("tokenize_negative", "text"),
            "seed": both(("empty", "seed")),
            "batch_size": both(("empty", "batch_size")),
            "steps": both(("sigmas", "steps")),
            "cfg_scale": both(("guide", "cfg_scale")),
            "guidance": both(("guide", "guidance")),
            "sampler": both(("sample", "sampler")),
            "width": ("sr_empty", "width"),
            "height": ("sr_empty", "height"),
            "noise_level": ("low_res", "noise_level"),
        },
        defaults={
            "width": 16,
            "height": 16,
            "steps": 3,
            "sampler": "euler",
            "cfg_scale": 2.0,
            "noise_level": 0.25,
        },
        description="tiny random two-stage cascade (tests)",
    )


def diffusion_toy_recipe() -> Recipe:
    return diffusion_recipe(
        tokenizer="toy.chars",
        text_encoder="toy.embed",
        denoiser="toy.denoiser",
        decoder="toy.identity",
        size_multiple=1,
        defaults={
            "width": 8,
            "height": 8,
            "steps": 4,
            "sampler": "toy.euler",
            "guidance": "none",
        },
        description="tiny random iterative denoiser (tests)",
    )


@hookimpl
def t2i_register_tokenizers(register):
    register("toy.chars", CharTokenizer)


@hookimpl
def t2i_register_text_encoders(register):
    register("toy.embed", EmbedEncoder)


@hookimpl
def t2i_register_denoisers(register):
    register("toy.denoiser", ToyDenoiser)
    register("toy.super_res", ToySuperRes)
    register("toy.transformer", TinyTransformer)
    register("toy.generator", TinyGenerator)


@hookimpl
def t2i_register_samplers(register):
    register("toy.euler", ToyEuler, aliases=("Toy Euler",))


@hookimpl
def t2i_register_decoders(register):
    register("toy.identity", Identity)
    register("toy.palette", Palette)


@hookimpl
def t2i_register_recipes(register):
    register("toy-diffusion", diffusion_toy_recipe)
    register("toy-autoregressive", autoregressive_recipe, aliases=("toy-ar",))
    register("toy-gan", gan_recipe)
    register("toy-cascade", cascade_recipe)
