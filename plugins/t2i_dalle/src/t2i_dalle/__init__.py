"""t2i_dalle: the autoregressive family of t2i (DALL-E, Ramesh et al. 2021, arXiv 2102.12092).

A discrete VAE turns an image into a grid of codebook tokens (:mod:`t2i_dalle.dvae`, OpenAI's
architecture and parameter names); a decoder-only transformer over ``[text | image tokens]``
draws image tokens one at a time with a KV cache (:mod:`t2i_dalle.transformer`); the dVAE
decodes them. :mod:`t2i_dalle.mini` holds DALL-E Mini / Mega (min-dalle's layout: a BART
encoder-decoder and a VQGAN detokenizer). Hooks: :mod:`t2i_dalle.plugin` (registered by import
path: discovery imports no torch).
"""
