"""Test helpers: a tiny analytic timestep-conditioned network and a diffusers loop driver."""

from __future__ import annotations

import torch

F64 = torch.float64
SHAPE = (2, 4, 8, 8)


def make_net(seed: int = 0):
    """``net(x_in, t, cond=None)``: a small nonlinear function of the input and the timestep."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 4, generator=g, dtype=F64) * 0.5
    b = torch.randn(4, generator=g, dtype=F64) * 0.1

    def net(x_in, t, cond=None):
        t = torch.as_tensor(t, dtype=F64).reshape(-1)
        t = t.expand(x_in.shape[0]).reshape(-1, 1, 1, 1)
        h = torch.einsum("oc,bchw->bohw", w, x_in.to(F64)) + b.reshape(1, 4, 1, 1)
        return torch.tanh(h) * (0.5 + t / 2000) + 0.1 * x_in.to(F64)

    return net


def run_diffusers(sched, x, net, *, steps, generator=None, noises=None, vp=False):
    """Drive a diffusers scheduler loop by hand; returns the final sample."""
    sched.set_timesteps(steps)
    for i, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(x, t)
        out = net(x_in, t)
        kwargs = {}
        if generator is not None:
            kwargs["generator"] = generator
        if noises is not None:
            kwargs["variance_noise"] = noises[i]
        x = sched.step(out, t, x, **kwargs).prev_sample.to(F64)
    return x


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


class KeyedNoise:
    """Pre-drawn step noise keyed by the ``(sigma, sigma_next)`` call, shared by two samplers.

    ``keyed(sigma, sigma_next)`` returns the tensor of the key that matches both values to
    ``rtol`` (diffusers' float32 sigma tables differ from ours by ~1e-5 relative; adjacent
    keys differ by far more) and fails on a call no key matches; ``calls`` counts the
    lookups per key.
    """

    def __init__(self, keys, *, seed: int, rtol: float = 1e-4):
        g = torch.Generator().manual_seed(seed)
        self.keys = [(float(a), float(b)) for a, b in keys]
        self.noises = [torch.randn(SHAPE, generator=g, dtype=F64) for _ in self.keys]
        self.rtol = rtol
        self.calls = [0] * len(self.keys)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        s, sn = float(sigma), float(sigma_next)
        for i, (a, b) in enumerate(self.keys):
            if abs(s - a) <= self.rtol * a and abs(sn - b) <= self.rtol * b:
                self.calls[i] += 1
                return self.noises[i]
        raise AssertionError(f"no pre-drawn noise for the call ({s!r}, {sn!r})")
