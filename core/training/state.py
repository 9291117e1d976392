"""The resumable state file: written atomically, read on the host.

``OUT/NAME.state.pt`` is a ``torch.save`` dict written through
:func:`t2i.files.write_atomically`, so a run killed at any moment (SIGKILL mid-save
included) leaves the previous complete state, never a torn one; a temporary file such a
kill may leave behind is removed by the next run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from t2i.files import write_atomically

FORMAT = "t2i.training/1"
"""The ``format`` entry of every state file this loop writes."""


def state_path(out: Path, name: str) -> Path:
    return Path(out) / f"{name}.state.pt"


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus its format tag) to ``path`` atomically."""
    write_atomically(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_state(path: Path) -> dict[str, Any] | None:
    """The state saved at ``path`` (on the CPU), or None when there is none."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a state file of t2i's training loop ({FORMAT}): "
            "train into a new --out, or delete the file to start afresh"
        )
    return state


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files an interrupted save of ``path`` left behind."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def rng_state(device: torch.device) -> dict[str, Any]:
    """torch's CPU generator and, on CUDA, ``device``'s."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
