"""Run mmdeploy 1.3.1's ONNX export on this stack (torch 2.14), with every change in one visible place.

mmdeploy 1.3.1 (2023-12, its last release) is used as it is — its rewriters, NMS and RoIAlign
symbolics, task processors and onnxruntime wrapper. Two things in torch changed since then;
:func:`patched` bridges them for the duration of an export and undoes them afterwards (nothing in
``site-packages`` is edited):

1. ``torch.onnx.export`` defaults to ``dynamo=True`` since torch 2.9. The dynamo exporter needs
   ``onnxscript`` and traces with ``torch.export``, which bypasses mmdeploy's function and symbolic
   rewriters (NMS, RoIAlign, the detector heads). mmdeploy calls ``torch.onnx.export`` without
   ``dynamo``: the patch passes ``dynamo=False`` (the TorchScript exporter mmdeploy was written for)
   when the caller did not choose.
2. ``torch.onnx.symbolic_opset9._cast_Long`` (a deprecated ``aten::_cast_Long`` symbolic) no longer
   exists in torch 2.14. mmdeploy's RoIAlign symbolic
   (``mmdeploy/mmcv/ops/roi_align.py``, every two-stage detector) imports it to cast the RoI batch
   indices to int64; the patch provides it as the ``Cast(to=INT64)`` node it used to emit.

Use::

    from rep_backbones.deploy.mmdeploy_compat import torch2onnx
    torch2onnx(img, work_dir, 'end2end.onnx', deploy_cfg, model_cfg, checkpoint)   # mmdeploy's API

or wrap any mmdeploy call in ``with patched(): ...``. Checking a graph is
:mod:`rep_backbones.deploy.mmdeploy_verify`.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Iterator

import torch
import torch.onnx
import torch.onnx.symbolic_opset9 as _opset9


def _cast_long(g, input, non_blocking):
    """The removed ``symbolic_opset9._cast_Long(g, input, non_blocking)``: an ONNX ``Cast`` to int64."""
    return g.op('Cast', input, to_i=torch._C._onnx.TensorProtoDataType.INT64)


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Apply the changes of the module docstring inside the ``with`` block, then undo them."""
    export = torch.onnx.export
    had_cast_long = hasattr(_opset9, '_cast_Long')
    if 'dynamo' in inspect.signature(export).parameters:
        @functools.wraps(export)
        def export_torchscript(*args, **kwargs):
            kwargs.setdefault('dynamo', False)
            return export(*args, **kwargs)
        torch.onnx.export = export_torchscript
    if not had_cast_long:
        _opset9._cast_Long = _cast_long
    try:
        yield
    finally:
        torch.onnx.export = export
        if not had_cast_long:
            del _opset9._cast_Long


def torch2onnx(img, work_dir: str, save_file: str, deploy_cfg, model_cfg, model_checkpoint=None,
               device: str = 'cpu') -> str:
    """``mmdeploy.apis.torch2onnx`` inside :func:`patched`; returns the path of the ONNX file.

    Args are mmdeploy's: ``img`` (path or HxWx3 array) is run through the model config's test
    pipeline to trace the graph; ``deploy_cfg`` is an mmdeploy config (``configs/mmdeploy/``),
    ``model_cfg`` / ``model_checkpoint`` the model config and weights (a fused checkpoint with its
    ``configs/deploy/*_deploy.py`` config, or a training config and checkpoint: mmdeploy calls
    ``model.backbone.switch_to_deploy()`` after loading).
    """
    import os.path as osp

    from mmdeploy.apis import torch2onnx as mmdeploy_torch2onnx
    with patched():
        mmdeploy_torch2onnx(img, work_dir, save_file, deploy_cfg=deploy_cfg, model_cfg=model_cfg,
                            model_checkpoint=model_checkpoint, device=device)
    return osp.join(work_dir, save_file)
