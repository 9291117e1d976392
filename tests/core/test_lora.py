"""t2i.lora: LoRA files in two layouts, merged into any component, against float64 math."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from t2i.checkpoints import CheckpointError
from t2i.lora import adapt_component, lora_modules, merge_lora, prompt_loras, read_lora


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleDict({"proj": nn.Linear(6, 5), "conv": nn.Conv2d(3, 4, 3)})


def _lora(path, layout, rank=2, alpha=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "block.proj": ((rank, 6), (5, rank)),
        "block.conv": ((rank, 3, 3, 3), (4, rank, 1, 1)),
    }
    state, want = {}, {}
    for name, (d, u) in shapes.items():
        down, up = torch.randn(*d, generator=g), torch.randn(*u, generator=g)
        if layout == "kohya":
            stem = "lora_unet_" + name.replace(".", "_")
            state |= {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up}
            if alpha is not None:
                state[f"{stem}.alpha"] = torch.tensor(alpha)
        else:
            state |= {f"unet.{name}.lora_A.weight": down, f"unet.{name}.lora_B.weight": up}
        want[name] = (down.double(), up.double())
    save_file(state, str(path))
    return want


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
def test_merge_matches_float64(tmp_path, layout):
    net = Net()
    before = {n: m.weight.detach().double().clone() for n, m in lora_modules(net).items()}
    alpha = 1.0 if layout == "kohya" else None
    want = _lora(tmp_path / "l.safetensors", layout, alpha=alpha)
    adapted = adapt_component(net, "denoiser", loras=[(tmp_path / "l.safetensors", 0.7)])
    factor = 0.7 * (0.5 if layout == "kohya" else 1.0)  # alpha / rank = 1 / 2
    for name, module in lora_modules(adapted).items():
        down, up = want[name]
        delta = (up.flatten(1) @ down.flatten(1)).reshape(before[name].shape)
        assert torch.allclose(module.weight.double(), before[name] + factor * delta, atol=1e-5)
    for name, module in lora_modules(net).items():  # the original is untouched
        assert torch.equal(module.weight.double(), before[name])


def test_file_for_another_model_names_the_layers(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file(
        {
            "unet.other.lora_A.weight": torch.zeros(2, 6),
            "unet.other.lora_B.weight": torch.zeros(5, 2),
        },
        str(path),
    )
    with pytest.raises(CheckpointError, match="another architecture") as info:
        merge_lora(Net(), read_lora(path)["unet"], 1.0, path=path)
    assert "other" in str(info.value) and "block.proj" in str(info.value)


def test_prompt_tags():
    text, tags = prompt_loras("a cat <lora:style:0.8> on a mat <lora:ink>")
    assert text == "a cat  on a mat" and tags == [("style", 0.8), ("ink", 1.0)]
    with pytest.raises(ValueError, match="must be a number"):
        prompt_loras("<lora:style:much>")


def test_find_lora_looks_below_the_folder_by_name(tmp_path, monkeypatch):
    from t2i.lora import find_lora

    (tmp_path / "styles").mkdir()
    (tmp_path / "top.safetensors").write_bytes(b"")
    (tmp_path / "styles" / "ink.safetensors").write_bytes(b"")
    assert find_lora("top", tmp_path) == str(tmp_path / "top.safetensors")
    assert find_lora("ink", tmp_path) == str(tmp_path / "styles" / "ink.safetensors")
    assert find_lora("styles/ink", tmp_path) == str(tmp_path / "styles" / "ink.safetensors")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "ink.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"2 files called ink\.safetensors"):
        find_lora("ink", tmp_path)
    with pytest.raises(ValueError, match="LoRAs there: ink, top"):
        find_lora("nope", tmp_path)
    monkeypatch.delenv("T2I_LORA_DIR", raising=False)
    with pytest.raises(ValueError, match="no LoRA folder"):
        find_lora("ink", None)
