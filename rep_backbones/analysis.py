"""Model complexity as the papers count it: parameters, and conv + linear multiply-accumulates.

MACs follow the thop-style convention of the seeds: for every ``nn.Conv2d`` output element
``C_in / groups * kh * kw`` MACs, for every ``nn.Linear`` output element ``in_features`` MACs; BN,
activations, pooling, additions and biases are not counted.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """All parameters (BN affine included), as ``sum(p.numel())``."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Union[int, Sequence[int]] = 224, in_channels: int = 3) -> int:
    """Conv + linear MACs of one forward pass of a single image (batch 1) in eval mode."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    total = 0

    def conv_hook(module: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros(1, in_channels, *input_size, dtype=param.dtype, device=param.device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


def complexity(model: nn.Module, input_size: Union[int, Sequence[int]] = 224) -> Tuple[int, int]:
    """``(params, macs)``."""
    return count_params(model), count_macs(model, input_size)
