"""Autoregressive token generation: token samplers, logit guidance and the ``SampleTokens`` node.

One wing of the core beside :mod:`t2i.diffusion`. A :class:`~t2i.contracts.TokenPredictor`
(DALL-E's transformer, Ramesh et al. 2021) gives next-token logits with an explicit
:class:`~t2i.contracts.KVCache`; :mod:`t2i.autoregressive.sampling` draws tokens with
top-k / top-p / temperature from per-row seeded generators; :mod:`t2i.autoregressive.guidance`
is classifier-free guidance on logits (DALL-E Mini's "super-conditioning").
"""
