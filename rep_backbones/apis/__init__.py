"""What the command-line tools share, importable (``tools/*.py`` are thin command lines around it).

* :mod:`~rep_backbones.apis.build` — models from mm configs or ``NAME[:ARCH]`` specs
  (:func:`~rep_backbones.apis.build.parse_backbone_spec` is the one parser of those specs),
  :class:`~rep_backbones.apis.build.TensorModeWrapper`, ``--shape`` parsing;
* :mod:`~rep_backbones.apis.onnx_export` — ONNX export, onnxruntime parity, operator counts;
* :mod:`~rep_backbones.apis.complexity` / :mod:`~rep_backbones.apis.seed_tables` — parameter and
  MAC counts, and their comparison with the published figures in ``docs/seed_tables.yaml``;
* :mod:`~rep_backbones.apis.fused_checkpoint` — training checkpoint -> checked fused checkpoint;
* :mod:`~rep_backbones.apis.atomic` — atomic file writes (checkpoints, ONNX files, JSON).

Submodules are imported on use: this package imports nothing from mmdet / mmseg by itself.
"""
