"""The diffusion toolbox: samplers, schedules, guidance, their graph nodes and registration.

One wing of the core, above the graph and beside the other generation shapes
(:mod:`t2i.autoregressive`, :mod:`t2i.single_pass`):

- :mod:`t2i.diffusion.sampling`: ``sample_<name>(denoiser, x, sigmas, ...)`` functions and
  the eps / v / x0 denoiser adapters (with ``loss`` for training);
- :mod:`t2i.diffusion.schedules`: sigma schedules (``get_sigmas(model, steps)``);
- :mod:`t2i.diffusion.guidance`: guidance that wraps a diffusion denoiser;
- :mod:`t2i.diffusion.sampler`: :class:`DiffusionSampler`, what the sampling node runs;
- :mod:`t2i.diffusion.nodes`: the ``Sigmas``, ``Guide`` and ``SampleDiffusion`` node types;
- :mod:`t2i.diffusion.names`: web-UI names such as "DPM++ 2M Karras" -> sampler + schedule;
- :mod:`t2i.diffusion.registration`: the built-ins, registered by :mod:`t2i.builtins`.
"""
