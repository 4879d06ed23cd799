"""mmengine hooks: ``RepFuseHook`` (test the fused model) and ``SafeCheckpointHook``."""
from __future__ import annotations

import copy
from typing import Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ..fusion import find_rep_backbones, fuse_with_report
from .safe_load import DataHistoryBuffer


class RepFuseHook(Hook):
    """Test (and optionally validate) with the fused form of every re-parameterizable backbone.

    Before the test epoch (after the checkpoint is loaded and after ``EMAHook`` swapped the EMA
    weights in: this hook's priority is ``LOW``, after EMAHook's ``NORMAL``) it fuses a *deep copy*
    of the model with :func:`rep_backbones.fuse` and routes ``test_step`` to the copy; after the
    epoch the original model is used again. The model being trained is never modified, and
    EMAHook's positional parameter swap-back still pairs the original parameters.

    Args:
        on_val: also validate with the fused copy during training (default False: val runs the
            training form, as trained).
        check_equivalence: on the first batch, run each fused backbone and its original on the same
            input, log the max difference, and raise if it exceeds ``tolerance * max |output|``.
        tolerance: relative tolerance of that check.
        whole: also fold every conv+BN pair of necks and heads (``rep_backbones.fuse(..., whole=True)``).
    """
    priority = 'LOW'

    def __init__(self, on_val: bool = False, check_equivalence: bool = True, tolerance: float = 1e-4,
                 whole: bool = False):
        self.on_val = on_val
        self.whole = whole
        self.check_equivalence = check_equivalence
        self.tolerance = tolerance
        self._fused: Optional[torch.nn.Module] = None
        self._original: Optional[torch.nn.Module] = None
        self._captured: Dict[str, tuple] = {}
        self._handles: List = []

    # -- swapping in and out ---------------------------------------------------------------------
    def _enter(self, runner, mode: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not find_rep_backbones(model):
            print_log('RepFuseHook: no re-parameterizable backbone in the model', logger='current')
            return
        if all(b.deploy for _, b in find_rep_backbones(model)):
            print_log('RepFuseHook: model is already in deploy form; nothing to fuse', logger='current')
            return
        fused = copy.deepcopy(model)
        report = fuse_with_report(fused, whole=self.whole)
        fused.eval()
        print_log(f'RepFuseHook ({mode}): {report.summary()}', logger='current')
        self._original, self._fused = model, fused
        model.test_step = fused.test_step      # instance attribute: the loop calls the fused copy
        model.val_step = fused.val_step

    def _exit(self) -> None:
        if self._original is not None:
            for name in ('test_step', 'val_step'):
                self._original.__dict__.pop(name, None)
        self._remove_capture()
        self._original = self._fused = None

    def before_test_epoch(self, runner) -> None:
        self._enter(runner, 'test')

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._exit()

    def before_val_epoch(self, runner) -> None:
        if self.on_val:
            self._enter(runner, 'val')

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self.on_val:
            self._exit()

    # -- equivalence check on the first batch ----------------------------------------------------
    def _start_capture(self, batch_idx: int) -> None:
        if not (self.check_equivalence and batch_idx == 0 and self._fused is not None):
            return
        for name, backbone in find_rep_backbones(self._fused):
            def hook(module, args, output, name=name):
                self._captured[name] = (args[0].detach(), output)
            self._handles.append(backbone.register_forward_hook(hook))

    def _remove_capture(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @torch.no_grad()
    def _finish_capture(self) -> None:
        if not self._captured:
            return
        self._remove_capture()
        originals = dict(find_rep_backbones(self._original))
        for name, (inputs, fused_out) in self._captured.items():
            original = originals[name]
            was_training = original.training
            original.eval()
            ref = original(inputs)
            original.train(was_training)
            ref = ref if isinstance(ref, (tuple, list)) else (ref,)
            out = fused_out if isinstance(fused_out, (tuple, list)) else (fused_out,)
            label = name or 'model'
            if len(ref) != len(out) or any(a.shape != b.shape for a, b in zip(ref, out)):
                shapes = [tuple(b.shape) for b in out]
                raise RuntimeError(f'RepFuseHook: fused {label} returns maps of shapes {shapes}, '
                                   f'its training form {[tuple(a.shape) for a in ref]}')
            diff = max((a - b).abs().max().item() for a, b in zip(ref, out))
            scale = max(a.abs().max().item() for a in ref)
            print_log(f'RepFuseHook: {label} fused vs training form on the first batch: '
                      f'max |diff| {diff:.3g} (max |output| {scale:.3g})', logger='current')
            if diff > self.tolerance * scale:
                raise RuntimeError(f'RepFuseHook: fused {label} differs from its training form: max |diff| '
                                   f'{diff:.3g} > {self.tolerance} * {scale:.3g}')
        self._captured.clear()

    def before_test_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._start_capture(batch_idx)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._finish_capture()

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.on_val:
            self._start_capture(batch_idx)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.on_val:
            self._finish_capture()


class SafeCheckpointHook(Hook):
    """Make the checkpoints a run writes loadable with ``torch.load(weights_only=True)``.

    mmengine's message hub pickles ``HistoryBuffer`` objects together with their statistics
    functions, which only an unsafe unpickler can restore; this hook stores them as
    :class:`~rep_backbones.mm.safe_load.DataHistoryBuffer` (same data, no functions). The configs
    and ``tools/train.py`` of this package add it; add it to your own runs the same way:
    ``custom_hooks=[dict(type='SafeCheckpointHook')]``.
    """
    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get('message_hub')
        if isinstance(hub, dict) and isinstance(hub.get('log_scalars'), dict):
            hub['log_scalars'] = type(hub['log_scalars'])(
                (key, DataHistoryBuffer.from_buffer(buf)) for key, buf in hub['log_scalars'].items())

