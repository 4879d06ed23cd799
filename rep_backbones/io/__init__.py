"""Reading models and writing files, shared by the tools and the deploy path.

* :mod:`~rep_backbones.io.build` — models from mm configs or ``NAME[:ARCH]`` specs
  (:func:`~rep_backbones.io.build.parse_backbone_spec` is the one parser of those specs),
  :class:`~rep_backbones.io.build.TensorModeWrapper`, ``--shape`` parsing;
* :mod:`~rep_backbones.io.atomic` — atomic file writes (checkpoints, ONNX files, JSON).

Submodules are imported on use: this package imports nothing from mmdet / mmseg by itself.
"""
