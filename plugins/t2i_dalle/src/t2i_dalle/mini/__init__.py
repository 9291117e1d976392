"""DALL-E Mini / Mega in min-dalle's checkpoint layout (kuprel/min-dalle v0.4.11).

:mod:`.bart` is the BART-style text encoder and image-token decoder (GLU feed-forward,
pre- and post-attention LayerNorms), :mod:`.vqgan` the VQGAN detokenizer, :mod:`.tokenizer`
the byte-pair text tokenizer of ``vocab.json`` + ``merges.txt``, :mod:`.recipes` the
``dalle-mini`` recipe over a folder of ``encoder.pt``, ``decoder.pt``, ``detoker.pt``
(plain state dicts, read with ``weights_only=True``). The code is ours; the parameter names
are min-dalle's, so its files load unchanged.
"""
