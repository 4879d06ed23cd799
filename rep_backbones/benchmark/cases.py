"""Cases: the JSON-able dicts a benchmark run measures, and :func:`build_case`, which turns one into a
callable (one forward, or one training step) built from ``torch.manual_seed(0)``, so the forms of one
model share their weights.

Kinds, told apart by their keys: a backbone variant (``backbone``), a whole detector / segmentor form
(``form``), a detector training step (``with_cp``), a classifier training step (``classifier`` or
``timm``); each ``_*_case`` builder names its fields.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import torch
from torch import nn

import rep_backbones
from rep_backbones.fusion import NoOfficialForm, official_fused

from .settings import BACKBONE_VARIANTS, DTYPES, MEMORY_FORMATS, MODEL_FORMS, MODEL_MODES, Settings


@dataclass
class Case:
    """A built case: ``fn()`` runs it once; ``info`` goes into the JSON (fuse time, skips...)."""
    fn: Callable[[], object]
    info: dict = field(default_factory=dict)


def _input(settings: Settings, memory_format: str = 'nchw') -> torch.Tensor:
    """A seeded ``(batch, 3, H, W)`` input on the settings' device and dtype: every form sees the same one."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(settings.batch, 3, *settings.shape, generator=gen)
    return x.to(settings.device, DTYPES[settings.dtype]).contiguous(memory_format=MEMORY_FORMATS[memory_format])


def _place(model: nn.Module, settings: Settings, memory_format: str) -> nn.Module:
    """``model`` in eval mode on the settings' device, dtype and memory format (input and model alike)."""
    return model.to(settings.device, DTYPES[settings.dtype], memory_format=MEMORY_FORMATS[memory_format]).eval()


def _inference(module: Callable, *args) -> Callable[[], object]:
    """One call of ``module(*args)`` under ``torch.inference_mode`` (no autograd bookkeeping is timed)."""
    def run():
        with torch.inference_mode():
            return module(*args)
    return run


def _ort_case(module: nn.Module, settings: Settings, tag: str) -> Case:
    """onnxruntime on the TorchScript export of ``module`` (fp32, NCHW input)."""
    import onnxruntime as ort

    from rep_backbones.deploy.export import export_onnx
    from rep_backbones.deploy.runtimes import ort_session
    if settings.dtype != 'float32':
        return Case(None, dict(skipped=f'onnxruntime is measured in float32 only (asked {settings.dtype})'))
    x = _input(settings)
    path = os.path.join(settings.workdir, f'{tag}.onnx')
    export_onnx(module.cpu().float().eval(), x.cpu(), path)
    if settings.device.startswith('cuda'):
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            return Case(None, dict(skipped='onnxruntime has no CUDAExecutionProvider here'))
        session = ort.InferenceSession(path, providers=['CUDAExecutionProvider'])
    else:
        session = ort_session(path, settings.threads)
    feed = {session.get_inputs()[0].name: x.cpu().numpy()}
    return Case(lambda: session.run(None, feed), dict(onnx_bytes=os.path.getsize(path)))


def _timed_fuse(model: nn.Module, **kwargs) -> Tuple[nn.Module, float]:
    """``(model fused in place, seconds the fuse took)``; the seconds go into the JSON."""
    t0 = time.perf_counter()
    rep_backbones.fuse(model, **kwargs)
    return model, time.perf_counter() - t0


def _backbone_case(case: dict, settings: Settings) -> Case:
    """``{'backbone': 'NAME:ARCH', 'variant': train|official|fused|fused_compiled|ort,
    'memory_format': nchw|channels_last}``."""
    from rep_backbones.io.build import build_from_spec
    torch.manual_seed(0)
    model = build_from_spec(case['backbone'])
    variant, fmt = case['variant'], case.get('memory_format', 'nchw')
    info = {}
    if variant == 'official':
        try:
            model = official_fused(model)
        except NoOfficialForm as err:
            return Case(None, dict(skipped=str(err)))
    elif variant in ('fused', 'fused_compiled', 'ort'):
        model, info['fuse_s'] = _timed_fuse(model)
    elif variant != 'train':
        raise ValueError(f'unknown backbone variant {variant!r}; expected one of '
                         f'{", ".join(BACKBONE_VARIANTS + ("fused_compiled",))}')
    if variant == 'ort':
        return _merge(_ort_case(model, settings, _tag(case)), info)
    model = _place(model, settings, fmt)
    if variant == 'fused_compiled':
        model = torch.compile(model, mode=settings.compile_mode)
    return Case(_inference(model, _input(settings, fmt)), info)


def _tag(case: dict) -> str:
    """A file-name-safe stem for the case's ONNX export (at most 120 characters)."""
    return ''.join(c if c.isalnum() else '_' for c in json.dumps(case, sort_keys=True))[:120]


def _merge(case: Case, info: dict) -> Case:
    """``case`` with ``info`` (fuse time, ...) added to what goes into the JSON."""
    case.info.update(info)
    return case


def _is_two_stage(model: nn.Module) -> bool:
    return hasattr(model, 'rpn_head') and hasattr(model, 'roi_head')


def _scope(model: nn.Module) -> str:
    return model.cfg.get('default_scope') or ('mmseg' if hasattr(model, 'decode_head') else 'mmdet')


def predict_batch(model: nn.Module, settings: Settings):
    """``(inputs, data_samples)`` for ``model.predict``: a seeded random uint8 image of ``shape`` per
    batch item through the model's own data preprocessor (normalise, pad, image metadata)."""
    h, w = settings.shape
    gen = torch.Generator().manual_seed(0)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0))
    if _scope(model) == 'mmseg':
        from mmseg.structures import SegDataSample as Sample
    else:
        from mmdet.structures import DetDataSample as Sample
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for _ in range(settings.batch)]
    data = model.data_preprocessor(dict(inputs=images, data_samples=[Sample(metainfo=meta) for _ in images]),
                                   False)
    return data['inputs'].to(DTYPES[settings.dtype]), data['data_samples']


@functools.lru_cache(maxsize=1)
def _built_model(config: str, checkpoint: Optional[str]) -> nn.Module:
    """The eval-mode model of a config on the CPU, built once for all forms of a table group
    (each case works on a deep copy)."""
    from rep_backbones.io.build import build_model_from_config
    torch.manual_seed(0)
    return build_model_from_config(config, checkpoint, 'cpu')


def _model_case(case: dict, settings: Settings) -> Case:
    """``{'config': PATH, 'form': train|fused|fused_whole|ort, 'mode': tensor|predict,
    'memory_format': nchw|channels_last, 'checkpoint': None}``. Two-stage detectors run
    backbone + neck in tensor mode (their RoI stage needs NMS proposals)."""
    from rep_backbones.io.build import TensorModeWrapper
    form, mode, fmt = case['form'], case['mode'], case.get('memory_format', 'nchw')
    if mode not in MODEL_MODES:
        raise ValueError(f'unknown mode {mode!r}; expected one of {", ".join(MODEL_MODES)}')
    if form == 'ort' and mode != 'tensor':
        return Case(None, dict(skipped='onnxruntime runs the tensor-mode graph only'))
    model = copy.deepcopy(_built_model(case['config'], case.get('checkpoint')))
    info = {}
    if form == 'fused_whole':
        model, info['fuse_s'] = _timed_fuse(model, whole=True)
    elif form in ('fused', 'ort'):
        whole = form == 'ort'                               # onnxruntime gets the most fused graph there is
        model, info['fuse_s'] = _timed_fuse(model, whole=whole)
        info['fused_with'] = 'fuse(whole=True)' if whole else 'fuse'
    elif form != 'train':
        raise ValueError(f'unknown form {form!r}; expected one of {", ".join(MODEL_FORMS)}')
    part = 'features' if _is_two_stage(model) else 'full'
    if mode == 'tensor':
        info['part'] = part
    if form == 'ort':
        return _merge(_ort_case(TensorModeWrapper(model, part).eval(), settings, _tag(case)), info)
    model = _place(model, settings, fmt)
    if mode == 'tensor':
        return Case(_inference(TensorModeWrapper(model, part).eval(), _input(settings, fmt)), info)
    inputs, samples = predict_batch(model, settings)
    inputs = inputs.to(settings.device).contiguous(memory_format=MEMORY_FORMATS[fmt])
    return Case(_inference(model.predict, inputs, samples), info)


def _train_case(case: dict, settings: Settings) -> Case:
    """One SGD step of a detector in train mode: ``{'config': PATH, 'with_cp': bool}``; toy boxes
    (and masks for Mask R-CNN) from ``mmdet.testing.demo_mm_inputs``."""
    from mmdet.testing import demo_mm_inputs

    from rep_backbones.io.build import build_model_from_config
    options = {}
    if case.get('with_cp'):
        options['model.backbone.with_cp'] = True
    torch.manual_seed(0)
    # built on the CPU, which turns SyncBN into BN: one process trains here, without a process group
    model = build_model_from_config(case['config'], None, 'cpu', cfg_options=options).to(settings.device).train()
    h, w = settings.shape
    packed = demo_mm_inputs(settings.batch, [(3, h, w)] * settings.batch, num_items=[4] * settings.batch,
                            num_classes=2, with_mask=_is_two_stage(model) and model.roi_head.with_mask)
    data = model.data_preprocessor(packed, True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    return Case(_train_step(model, optimizer, lambda: model(**data, mode='loss'), settings),
                dict(params=sum(p.numel() for p in model.parameters())))


def _classifier_train_case(case: dict, settings: Settings) -> Case:
    """One SGD step of an ImageNet classifier: ``{'classifier': 'FAMILY:ARCH'}`` (ours) or
    ``{'timm': NAME}`` (timm's port of the official model)."""
    torch.manual_seed(0)
    if 'timm' in case:
        import timm
        model = timm.create_model(case['timm'], pretrained=False)
    else:
        from rep_backbones.io.build import build_from_spec
        from rep_backbones.models import CLASSIFIERS
        model = build_from_spec(case['classifier'], CLASSIFIERS)
    model = model.to(settings.device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(settings.batch, 3, *settings.shape, generator=gen).to(settings.device)
    target = torch.randint(0, 1000, (settings.batch,), generator=gen).to(settings.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def loss():
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out     # RepNeXt distillation pair: first head
        return {'loss': nn.functional.cross_entropy(out, target)}
    return Case(_train_step(model, optimizer, loss, settings), dict(params=sum(p.numel() for p in model.parameters())))


def _train_step(model: nn.Module, optimizer, losses: Callable[[], dict], settings: Settings):
    """One optimizer step on the sum of every ``loss*`` entry of ``losses()`` (autocast below float32)."""
    autocast = settings.dtype != 'float32'

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(settings.device.split(':')[0], DTYPES[settings.dtype], enabled=autocast):
            out = losses()
        total = sum(v.sum() if not isinstance(v, (list, tuple)) else sum(t.sum() for t in v)
                    for k, v in out.items() if 'loss' in k)
        total.backward()
        optimizer.step()
        return total
    return step


def build_case(case: dict, settings: Settings) -> Case:
    """Dispatch on the case's keys (see the ``_*_case`` builders for each kind's fields)."""
    torch.set_num_threads(settings.threads)
    if 'backbone' in case:
        return _backbone_case(case, settings)
    if 'form' in case:
        return _model_case(case, settings)
    if 'with_cp' in case:
        return _train_case(case, settings)
    if 'classifier' in case or 'timm' in case:
        return _classifier_train_case(case, settings)
    raise ValueError(f'unrecognised benchmark case {case}')
