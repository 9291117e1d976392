"""Pack all-MiniLM-L6-v2 small enough to travel to the GPU machine, and unpack it there.

The device tool moves at most 64 MiB of working tree; MiniLM is 88 MB (fp32). Packed: fp16,
and of the 30,522 word-piece embedding rows only those the shapes benchmark's captions use
(every other row becomes the ``[UNK]`` row when unpacked). Enough to train and evaluate the
shapes defaults; not a general MiniLM.

    python benchmarks/minilm_travel.py pack .minilm16          # here
    python benchmarks/minilm_travel.py unpack .minilm16 /tmp/minilm && \
        export T2I_MINILM_PATH=/tmp/minilm                     # there
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROWS = "embeddings.word_embeddings.weight"


def caption_token_ids(tokenizer, n: int = 60_000) -> list[int]:
    """Every word-piece id of ``n`` random captions of each split, the eval prompts and the
    caption tables' phrases."""
    import numpy as np

    from t2i.shapes import captions
    from t2i.shapes.evaluate import prompt_set
    from t2i.shapes.splits import SPLITS, sample_scene

    rng = np.random.default_rng(0)
    texts = [p.text for p in prompt_set(512)]
    for split in SPLITS:
        texts += [captions.make_caption(sample_scene(rng, split), rng).text for _ in range(n)]
    for table in vars(captions).values():
        if isinstance(table, dict):
            texts += [" ".join(v) for v in table.values() if isinstance(v, tuple)]
        if isinstance(table, tuple) and all(isinstance(t, str) for t in table):
            texts += list(table)
    ids = set()
    for row in tokenizer(sorted(set(texts)))["input_ids"]:
        ids.update(row)
    return sorted(ids | set(tokenizer.all_special_ids))


def pack(out: Path) -> None:
    from transformers import BertModel, BertTokenizerFast

    from t2i.text.minilm import find_minilm

    src = find_minilm()
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    ids = caption_token_ids(BertTokenizerFast.from_pretrained(str(src)))
    state = {
        k: v.half().contiguous()
        for k, v in BertModel.from_pretrained(str(src)).state_dict().items()
    }
    rows = state.pop(ROWS)
    state["packed.ids"] = torch.tensor(ids)
    state["packed.rows"] = rows[ids].contiguous()
    state["packed.vocab_size"] = torch.tensor(rows.shape[0])
    save_file(state, str(out / "packed.safetensors"))
    print(f"{len(ids)} of {rows.shape[0]} embedding rows kept -> {out}")


def unpack(packed: Path, out: Path) -> None:
    from transformers import BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    for f in packed.iterdir():
        if f.is_file() and f.name != "packed.safetensors":
            shutil.copy(f, out / f.name)
    state = load_file(str(packed / "packed.safetensors"))
    ids, rows = state.pop("packed.ids"), state.pop("packed.rows")
    unk = BertTokenizerFast.from_pretrained(str(packed)).unk_token_id
    full = rows[ids.tolist().index(unk)].repeat(int(state.pop("packed.vocab_size")), 1)
    full[ids] = rows
    state[ROWS] = full
    save_file({k: v.float() for k, v in state.items()}, str(out / "model.safetensors"))


if __name__ == "__main__":
    verb, *paths = sys.argv[1:]
    {"pack": pack, "unpack": unpack}[verb](*map(Path, paths))
