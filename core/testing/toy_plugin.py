"""A plugin of tiny random models that exercises the three generation shapes.

Used by t2i's own tests and by plugin authors as a working example:

- ``toy-diffusion``: iterative denoising (``D(x, sigma, cond) -> x0``, Euler loop);
- ``toy-autoregressive``: a token loop carrying a key/value cache between steps;
- ``toy-gan``: a single-pass generator.

All three run through the same Engine, graph and executor, with no special case in
the core. Every component counts its calls in :data:`CALLS` so tests can prove
caching.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn

from t2i.graph.graph import Graph
from t2i.payloads import Conditioning, Image, Latent, Tokens
from t2i.recipe import Recipe, diffusion_recipe
from t2i.registry import hookimpl

CALLS: Counter = Counter()
VOCAB, WIDTH, CONTEXT = 64, 16, 16


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


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
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, WIDTH)

    def forward(self, tokens: Tokens) -> Conditioning:
        CALLS["text_encoder"] += 1
        e = self.embed(tokens.ids)
        return Conditioning(e, e.mean(1))


class ToyEpsModel(nn.Module):
    """A discrete-time epsilon model ``(x_in, t, cond) -> eps``: conv + FiLM of the text."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.film = nn.Linear(WIDTH, 3)

    def forward(self, x, t, cond):
        CALLS["denoiser"] += 1
        return torch.tanh(
            self.conv(x) + self.film(cond.pooled)[:, :, None, None] + t[:, None, None, None] / 1000
        )


class ToyDenoiser(nn.Module):
    """``D(x, sigma, cond) -> x0``: the toy eps model on SD's discrete schedule (1000 steps)."""

    def __init__(self):
        super().__init__()
        from t2i.diffusion.sampling.denoisers import DiscreteDenoiser
        from t2i.diffusion.schedules import get_alphas_cumprod

        self.eps = ToyEpsModel()
        self.adapter = DiscreteDenoiser(self.eps, get_alphas_cumprod("scaled_linear", 1000))
        self.sigma_min, self.sigma_max = self.adapter.sigma_min, self.adapter.sigma_max
        self.sigmas = self.adapter.sigmas

    def forward(self, x, sigma, cond):
        return self.adapter(x, sigma, cond)


class ToyEuler:
    """Euler steps over a geometric sigma ladder (a toy; the core ships the real samplers)."""

    def sample(self, job):
        sigmas = [
            *torch.logspace(
                math.log10(job.model.sigma_max), math.log10(job.model.sigma_min), job.steps
            ).tolist(),
            0.0,
        ]
        noise = torch.stack([torch.randn(job.shape[1:], generator=_seeded(s)) for s in job.seeds])
        x = noise * sigmas[0]
        for i in range(job.steps):
            s = torch.full((x.shape[0],), sigmas[i])
            d = (x - job.model(x, s, job.positive)) / sigmas[i]
            x = x + d * (sigmas[i + 1] - sigmas[i])
            if job.callback:
                job.callback(i + 1, job.steps)
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
    """Next-token logits over image tokens with a key/value cache (one attention layer)."""

    def __init__(self, codebook: int = 8):
        super().__init__()
        torch.manual_seed(2)
        self.codebook = codebook
        self.embed = nn.Embedding(codebook + 1, WIDTH)  # last id is <bos>
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, codebook)

    def forward(self, token, cond, cache):
        """token ``(B,)``; cache ``(k, v)`` of shape ``(B, T, W)`` or None -> logits, cache."""
        CALLS["transformer"] += 1
        h = self.embed(token)[:, None] + cond.pooled[:, None]  # (B, 1, W)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 1), torch.cat([cache[1], v], 1)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(WIDTH), -1)  # (B, 1, T)
        return self.out((att @ v)[:, 0]), (k, v)


class TopKSampler:
    """Autoregressive top-k sampling with a KV cache; ``cache_lengths`` records the loop."""

    cache_lengths: tuple[int, ...] = ()

    def sample(self, job):
        model = job.model
        b, _, h, w = job.shape
        gens = [_seeded(s) for s in job.seeds]
        token = torch.full((b,), model.codebook, dtype=torch.long)
        cache, out = None, []
        lengths = []
        for i in range(h * w):
            logits, cache = model(token, job.positive, cache)
            lengths.append(cache[0].shape[1])
            k = job.top_k or model.codebook
            top = logits.topk(k, dim=-1)
            probs = torch.softmax(top.values / job.temperature, -1)
            pick = torch.stack(
                [torch.multinomial(probs[r], 1, generator=gens[r]) for r in range(b)]
            )
            token = top.indices.gather(1, pick)[:, 0]
            out.append(token)
            if job.callback:
                job.callback(i + 1, h * w)
        TopKSampler.cache_lengths = tuple(lengths)
        return Latent(torch.stack(out, 1).view(b, 1, h, w), seeds=job.seeds)


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
    """``G(z, cond) -> image`` in one pass: an MLP to a 3x16x16 image in [-1, 1]."""

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


class SinglePass:
    """Draw ``z`` from the seeds, call the generator once (truncation = guidance scale)."""

    def sample(self, job):
        z = torch.stack([torch.randn(job.shape[1:], generator=_seeded(s)) for s in job.seeds])
        return Latent(job.model(z * min(job.cfg_scale, 1.0), job.positive), seeds=job.seeds)


class NoGuidance:
    def wrap(self, model, *, uncond, scale):
        return model


def _single_prompt_graph(denoiser: str, decoder: str, latent: dict, **sample: object) -> Graph:
    """text -> tokens -> conditioning -> Sample(denoiser, **sample) -> Decode(decoder).

    ``latent`` holds EmptyLatent parameters; without "channels" the decoder sets the shape.
    """
    g = Graph()
    tok = g.add("tokenizer", "LoadTokenizer", name="toy.chars")
    enc = g.add("text_encoder", "LoadTextEncoder", name="toy.embed")
    model = g.add("denoiser", "LoadDenoiser", name=denoiser)
    dec = g.add("decoder", "LoadDecoder", name=decoder)
    t = g.add("tokenize", "Tokenize", tokenizer=tok["tokenizer"])
    c = g.add("encode", "EncodeText", text_encoder=enc["text_encoder"], tokens=t["tokens"])
    links = {} if "channels" in latent else {"decoder": dec["decoder"]}
    e = g.add("empty", "EmptyLatent", **links, **latent)
    s = g.add(
        "sample",
        "Sample",
        model=model["model"],
        positive=c["conditioning"],
        latent=e["latent"],
        guidance="toy.none",
        **sample,
    )
    g.add("decode", "Decode", decoder=dec["decoder"], samples=s["samples"])
    return g


def autoregressive_recipe() -> Recipe:
    """text -> tokens -> conditioning -> AR token loop -> palette decoder."""
    g = _single_prompt_graph("toy.transformer", "toy.palette", {}, sampler="toy.top_k", top_k=4)
    return Recipe(
        graph=g,
        output=g["decode"]["image"],
        size_multiple=4,
        bindings={
            "prompt": ("tokenize", "text"),
            "seed": ("empty", "seed"),
            "width": ("empty", "width"),
            "height": ("empty", "height"),
            "batch_size": ("empty", "batch_size"),
            "temperature": ("sample", "temperature"),
        },
        defaults={"width": 16, "height": 16, "sampler": "toy.top_k", "guidance": "toy.none"},
    )


def gan_recipe() -> Recipe:
    """text -> conditioning -> one generator pass -> identity decoder."""
    g = _single_prompt_graph(
        "toy.generator",
        "toy.identity",
        {"channels": 8, "factor": 0},
        sampler="toy.single_pass",
        cfg_scale=1.0,
    )
    return Recipe(
        graph=g,
        output=g["decode"]["image"],
        size_multiple=1,
        bindings={
            "prompt": ("tokenize", "text"),
            "seed": ("empty", "seed"),
            "batch_size": ("empty", "batch_size"),
            "cfg_scale": ("sample", "cfg_scale"),
        },
        defaults={
            "width": 16,
            "height": 16,
            "sampler": "toy.single_pass",
            "guidance": "toy.none",
            "cfg_scale": 1.0,
        },
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
            "guidance": "toy.none",
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
    register("toy.transformer", TinyTransformer)
    register("toy.generator", TinyGenerator)


@hookimpl
def t2i_register_samplers(register):
    register("toy.euler", ToyEuler, aliases=("Toy Euler",))
    register("toy.top_k", TopKSampler)
    register("toy.single_pass", SinglePass)


@hookimpl
def t2i_register_guidance(register):
    register("toy.none", NoGuidance)


@hookimpl
def t2i_register_decoders(register):
    register("toy.identity", Identity)
    register("toy.palette", Palette)


@hookimpl
def t2i_register_recipes(register):
    register("toy-diffusion", diffusion_toy_recipe)
    register("toy-autoregressive", autoregressive_recipe, aliases=("toy-ar",))
    register("toy-gan", gan_recipe)
