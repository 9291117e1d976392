"""Profile one ldm-shapes training step (UNet + text encoder, batch 256) on CUDA."""

import time

import torch
import torch.nn.functional as F
from transformers import CLIPTextModel

from t2i_ldm import shapes_model as sm
from t2i_ldm.unet import UNetModel

dev = torch.device("cuda")
unet = UNetModel(sm.UNET).to(dev)
text = CLIPTextModel(sm.text_config(1000)).to(dev)
params = list(unet.parameters()) + list(text.parameters())
opt = torch.optim.AdamW(params, lr=1e-4)
B = 256
x = torch.randn(B, 4, 16, 16, device=dev)
ids = torch.randint(0, 998, (B, 77), device=dev)


def step(with_text=True):
    t = torch.randint(0, 1000, (B,), device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ctx = (
            text(input_ids=ids).last_hidden_state
            if with_text
            else torch.randn(B, 77, 128, device=dev)
        )
        loss = F.mse_loss(unet(x, t, ctx).float(), x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


for name, fn in [("full", lambda: step(True)), ("no_text", lambda: step(False))]:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    print(name, f"{(time.perf_counter() - t0) / 10 * 1000:.1f} ms/step")

with torch.profiler.profile(
    activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
) as prof:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
