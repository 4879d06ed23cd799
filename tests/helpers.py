"""Shared test utilities: non-trivial BN statistics and the fused-vs-training equivalence check."""
from __future__ import annotations

import copy
import os

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import rep_backbones

# The project's fusion tolerance: max |fused - train| <= FUSE_RTOL * max |train| (float32, eval mode).
FUSE_RTOL = 1e-4
ODD_SIZE = (251, 331)


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random running mean/var and affine parameters (not the init values),
    so that folding mistakes cannot hide behind mean 0 / var 1 / weight 1 / bias 0."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            if module.weight is not None:
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


def count_norms(model: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


@torch.no_grad()
def assert_fuses_exactly(model: nn.Module, x: torch.Tensor, rtol: float = FUSE_RTOL) -> nn.Module:
    """Fuse a deep copy of ``model`` (eval mode, random BN stats) and compare every output."""
    randomize_bn(model)
    model.eval()
    fused = rep_backbones.fuse(copy.deepcopy(model))
    ref, out = model(x), fused(x)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    out = out if isinstance(out, (tuple, list)) else (out,)
    assert len(ref) == len(out)
    for a, b in zip(ref, out):
        assert a.shape == b.shape
        err = (a - b).abs().max().item()
        scale = a.abs().max().item()
        assert err <= rtol * scale, f'fused output differs: max |diff| {err:.3g} > {rtol} * {scale:.3g}'
    return fused


# Copies of ../shared/reference/keys: every key (name and shape) of the official checkpoints.
KEYS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'keys')


def keys_file(name: str) -> str:
    """Path of a reference key list (``NAME.keys.txt`` / ``NAME.fused_keys.txt``)."""
    return os.path.join(KEYS_DIR, name)


def synthetic_state_dict(path: str, seed: int = 0) -> dict:
    """A state dict with the names and shapes listed in a reference keys file (``name (d0, d1)``),
    filled with random values (positive ``running_var``)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            name, shape = line.split(' ', 1)
            dims = tuple(int(d) for d in shape.strip('()').split(',') if d.strip())
            if name.endswith('num_batches_tracked'):
                state[name] = torch.tensor(100)
            elif name.endswith('running_var'):
                state[name] = torch.rand(dims, generator=gen) + 0.5
            else:
                state[name] = torch.randn(dims, generator=gen) * 0.1
    return state


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Non-trivial but realistic BN state: running statistics measured on ``x`` (one train-mode pass
    with momentum 1) and random affine parameters. Keeps activations bounded in deep plain nets
    (RepMobile), where fully random statistics blow float32 up."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for m in norms:
        m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
        m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    model.train()
    for m in norms:
        m.momentum = 1.0
    model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return model


def _flat(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in _flat(item)]


# float64 fusion must reproduce the float64 training form to this relative error: the algebra is exact,
# so only float64 rounding remains (measured: <= 1e-11 on every family, RepMobile-S in RetinaNet included).
FUSE_RTOL_FLOAT64 = 1e-9


@torch.no_grad()
def assert_fusion_exact(model: nn.Module, fused: nn.Module, x: torch.Tensor, fuse_fn, forward=None,
                        rtol: float = FUSE_RTOL) -> None:
    """Fused vs training form (both eval mode), in two parts:

    1. the algebra, in float64: ``fuse_fn`` applied to a float64 copy of ``model`` matches it to
       :data:`FUSE_RTOL_FLOAT64` (a fusion error shows up here whatever the conditioning);
    2. float32, the deployed precision: ``fused`` matches ``model`` to ``rtol`` relative to the
       largest output, or to 4x the training form's *own* float32 error against float64, whichever is
       larger. A net that amplifies rounding (RepMobile's deep plain stages with near-zero BN variances:
       1e-7 input noise -> 1e-3 at stride 16) cannot be held to tighter than its own float32 error.
    """
    forward = forward or (lambda m, inp: m(inp))
    model64 = copy.deepcopy(model).double().eval()
    fused64 = fuse_fn(copy.deepcopy(model64)).eval()
    ref64, out64 = _flat(forward(model64, x.double())), _flat(forward(fused64, x.double()))
    ref32, out32 = _flat(forward(model, x)), _flat(forward(fused, x))
    for r64, o64, r32, o32 in zip(ref64, out64, ref32, out32):
        scale = r64.abs().max().item()
        algebra = (o64 - r64).abs().max().item()
        assert algebra <= FUSE_RTOL_FLOAT64 * scale, f'fusion is not exact: float64 max |diff| {algebra:.3g} > ' \
                                                      f'{FUSE_RTOL_FLOAT64} * {scale:.3g}'
        noise = (r32.double() - r64).abs().max().item()
        err = (o32.double() - r32.double()).abs().max().item()
        assert err <= max(rtol * scale, 4 * noise), f'fused float32 output differs: max |diff| {err:.3g} > ' \
                                                    f'max({rtol} * {scale:.3g}, 4 * {noise:.3g})'


@torch.no_grad()
def damp_deep_plain_backbone(model: nn.Module, factor: float = 0.7) -> nn.Module:
    """RepMobile-L's 20-block plain stage is chaotic with random BN statistics (float32 vs float64 of the
    *training* form alone: ~5% apart at layer3; tests/test_repmobile.py): scale its conv weights so
    that a float32 comparison measures the algebra, not rounding amplification. Other models: unchanged."""
    backbone = getattr(model, 'backbone', model)
    if type(backbone).__name__ == 'RepMobile' and getattr(backbone, 'arch', None) == 'L':
        for m in backbone.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(factor)
    return model
