"""The Imagen family of t2i: cascaded pixel-space diffusion on a frozen text encoder.

Imagen (Saharia et al. 2022, arXiv 2205.11487) and DeepFloyd IF, its open counterpart:
an Efficient U-Net (:mod:`t2i_imagen.efficient_unet`), the IF UNet in diffusers' layout
(:mod:`t2i_imagen.if_unet`), noise-augmentation conditioning of super-resolution stages
(:mod:`t2i_imagen.noise_aug`), the ``imagen`` and ``imagen-shapes`` cascade recipes and
``t2i train imagen``.
"""
