"""Latent diffusion family (Stable Diffusion 1.x / 2.x) for t2i.

Modules, leaves first: :mod:`t2i_ldm.config` (attrs configs and presets),
:mod:`t2i_ldm.unet` (the denoising UNet), :mod:`t2i_ldm.vae` (AutoencoderKL and the
decoder component), :mod:`t2i_ldm.denoiser` (the Karras-form denoiser component),
:mod:`t2i_ldm.checkpoint` (CompVis/A1111 single files), :mod:`t2i_ldm.diffusers_format`
(diffusers folders) and :mod:`t2i_ldm.plugin` (hook implementations).
"""

from __future__ import annotations

__version__ = "0.1.0"
