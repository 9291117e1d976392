"""t2i_gan: the text-conditional GAN family of t2i (DF-GAN, Tao et al. CVPR 2022).

A generator maps noise and a sentence embedding to a 64 px image in one pass
(:mod:`t2i_gan.models`); a one-way discriminator, trained against it with the hinge loss and
the matching-aware gradient penalty (:mod:`t2i_gan.losses`), judges image and text together.
Hooks: :mod:`t2i_gan.plugin` (registered by import path: discovery imports no torch).
"""
