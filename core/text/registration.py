"""Registration of the shared frozen text encoders, by import path (no torch at discovery)."""

from __future__ import annotations


def register_tokenizers(register) -> None:
    """Tokenizer ``minilm``: all-MiniLM-L6-v2's WordPiece, ids + mask."""
    from t2i.registry.lazy import lazy

    register(
        "minilm",
        lazy("t2i.text.minilm:create_tokenizer"),
        description="all-MiniLM-L6-v2 WordPiece tokenizer (ids + mask)",
    )


def register_text_encoders(register) -> None:
    """Text encoder ``minilm``: frozen all-MiniLM-L6-v2, token states + mask + sentence vector."""
    from t2i.registry.lazy import lazy

    register(
        "minilm",
        lazy("t2i.text.minilm:create_text_encoder"),
        description="frozen all-MiniLM-L6-v2: token states, mask, sentence vector (384)",
    )
