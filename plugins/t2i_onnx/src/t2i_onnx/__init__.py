"""t2i_onnx: ONNX export of any recipe and ONNX Runtime inference, family-agnostic.

``t2i export onnx RECIPE --out DIR`` (:mod:`t2i_onnx.exporter`) writes every module the
recipe's components name in their :class:`~t2i.contracts.ExportSpec` to
``DIR/<name>/model.onnx`` (Optimum's layout) with a ``manifest.json``
(:mod:`t2i_onnx.manifest`); ``Engine.build(runtime="onnx", onnx_dir=DIR)`` and
``t2i generate --onnx-dir DIR`` run the recipe with ONNX Runtime sessions in place of those
modules (:mod:`t2i_onnx.runtime`).
"""
