"""Single-pass generation: a generator ``G(z, cond) -> image`` called once (GANs).

One wing of the core beside :mod:`t2i.diffusion` and :mod:`t2i.autoregressive`: the
``SampleOnce`` node draws ``z`` per row from the seeds and calls the generator once;
guidance for generators is the truncation trick (:mod:`t2i.single_pass.guidance`).
"""
