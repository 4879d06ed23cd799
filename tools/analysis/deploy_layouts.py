#!/usr/bin/env python
"""Which exact fused layout is fastest, and how much faster than the training form can fusion make a
family at all? Three measurements on the fused backbones (batch 1, NCHW input as a detector gives it,
interleaved rounds in one process, medians):

* ``headroom`` -- torch.profiler on the training form (eval) and on the shipped deploy form, time split
  into convolutions / BatchNorm / everything else. Fusion removes BatchNorms, adds and branches; the
  convolutions stay (same count and shapes where no branch is merged), so
  ``train / conv time of train`` bounds ``train / fused`` whatever layout is chosen. The fused form's own
  split says what is left in it that is not a convolution (gates, activations, adds, copies).
* ``repnext`` -- the equivalent token-mixer layouts of a fused RepNeXt M: the shipped level 1 (block
  norm folded forward into the channel mixer, identity chunk passed through | 3x3 | 7x7 | 1x11->11x1,
  concat), the norm folded backward into the token mixer instead (identity chunk as a DW 1x1
  ``conv_i``), the level-2 single DW 11x11, the three small chunks merged into one DW 7x7 over 3/4 of the
  channels, and the concat replaced by writes into one output.
* ``pointwise`` -- every 1x1 conv (stride 1, groups 1) of the shipped deploy form computed as a matmul
  over the channels of the channels-last tensor (``[N*H*W, C] @ W^T``: no layout change, no copy)
  instead of by the convolution kernel.
* ``repmobile`` -- RepMobile's border correction: in-place strips cached per input size (shipped) vs the
  same strips rebuilt on every call vs the dense deficit map
  (the tracing path), against the conv without any correction (not exact: the cost of the correction).

Every layout is checked against the training form before it is timed (``max |diff|`` / max |output|).

    python tools/analysis/deploy_layouts.py [--sections headroom repnext pointwise repmobile] [--shape 512 512]
        [--threads 2] [--rounds 7]
"""
import argparse
import copy
import os
import sys
from typing import Callable, Dict

import torch
from torch import Tensor, nn

import rep_backbones
from rep_backbones.deploy.timing import interleaved, summarize
from rep_backbones.fusion import official_fused
from rep_backbones.io.build import parse_backbone_spec
from rep_backbones.models import build_backbone
from rep_backbones.models.registry import family_specs
from rep_backbones.models.repnext import ChunkConv
from rep_backbones.reparam import BorderCorrectedConv2d, pad_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from int8_family_table import calibrate_bn  # noqa: E402  (tools/analysis/int8_family_table.py)

HEADROOM = family_specs()
CONV_OPS = ('conv', 'mkldnn_convolution', 'thnn_conv', 'slow_conv', 'conv_depthwise')
BN_OPS = ('batch_norm',)


def training_form(spec: str, shape) -> nn.Module:
    """The backbone in its training structure, eval mode, with BN statistics calibrated on random
    images (non-trivial running mean / var, as a trained model has)."""
    kwargs = parse_backbone_spec(spec)
    torch.manual_seed(0)
    model = build_backbone(kwargs.pop('type'), **kwargs)
    return calibrate_bn(model, [torch.randn(2, 3, *shape) for _ in range(2)])


def timed(models: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, float]:
    """Median milliseconds per callable, ``rounds`` interleaved rounds after one warm-up call each."""
    with torch.inference_mode():
        times = interleaved(models, rounds, iters=1)
    return {name: summarize(t)['median_ms'] for name, t in times.items()}


def relative_error(reference: nn.Module, other: nn.Module, x: Tensor) -> float:
    with torch.inference_mode():
        ref, out = reference(x), other(x)
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ref, out))


LAYOUT_HEADER = ('| backbone | format | layout | ms | / shipped | max rel. diff to train |\n'
                 '|---|---|---|---|---|---|')


def layout_rows(spec: str, train: nn.Module, layouts: Dict[str, nn.Module], x: Tensor, rounds: int) -> None:
    """One table row per layout and memory format, timed against the first (shipped) layout."""
    for fmt_name, fmt in (('nchw', torch.contiguous_format), ('channels_last', torch.channels_last)):
        placed = {name: copy.deepcopy(m).to(memory_format=fmt) for name, m in layouts.items()}
        ms = timed({name: (lambda m=m: m(x)) for name, m in placed.items()}, rounds)
        base = ms[next(iter(ms))]
        for name, model in placed.items():
            print(f'| {spec} | {fmt_name} | {name} | {ms[name]:.1f} | {ms[name] / base:.2f} | '
                  f'{relative_error(train, model, x):.1e} |')


def _reclassed(model: nn.Module, selects: Callable[[nn.Module], bool], cls: type) -> nn.Module:
    """A deep copy of ``model`` whose selected modules run ``cls``'s forward (same parameters)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if selects(module):
            module.__class__ = cls
    return model


def op_split(model: nn.Module, x: Tensor, calls: int = 3) -> Dict[str, float]:
    """Self CPU time per call (ms) of convolution ops, BatchNorm ops and everything else."""
    from torch.profiler import ProfilerActivity, profile
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                model(x)
    split = {'conv': 0.0, 'bn': 0.0, 'other': 0.0}
    for event in prof.key_averages():
        name = event.key.lower()
        kind = ('conv' if any(op in name for op in CONV_OPS) else 'bn' if any(op in name for op in BN_OPS)
                else 'other')
        split[kind] += event.self_cpu_time_total / 1e3 / calls
    return split


def headroom(args, x: Tensor) -> None:
    print('\n## Headroom: where the training form spends its time (torch.profiler, self CPU time)\n')
    print('| backbone | format | train ms | conv | BN | other | bound train/fused if every conv stays = train/conv | '
          'fused ms | fused: conv / other | measured train/fused |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for spec in args.headroom:
        train = training_form(spec, args.shape)
        fused = rep_backbones.fuse(copy.deepcopy(train))       # deploy form: its deploy_memory_format
        for fmt_name, fmt in (('nchw', torch.contiguous_format), ('channels_last', torch.channels_last)):
            t = copy.deepcopy(train).to(memory_format=fmt)
            f = copy.deepcopy(fused).to(memory_format=fmt)
            split, fused_split = op_split(t, x), op_split(f, x)
            total, fused_total = sum(split.values()), sum(fused_split.values())
            ms = timed({'train': lambda: t(x), 'fused': lambda: f(x)}, args.rounds)
            print(f'| {spec} | {fmt_name} | {ms["train"]:.1f} | {100 * split["conv"] / total:.0f}% | '
                  f'{100 * split["bn"] / total:.0f}% | {100 * split["other"] / total:.0f}% | '
                  f'{total / split["conv"]:.2f}x | {ms["fused"]:.1f} | '
                  f'{100 * fused_split["conv"] / fused_total:.0f}% / '
                  f'{100 * (fused_split["bn"] + fused_split["other"]) / fused_total:.0f}% | '
                  f'{ms["train"] / ms["fused"]:.2f}x |')


class MergedSmallChunks(nn.Module):
    """Level-1 ChunkConv with its first three chunks (identity or DW 1x1, 3x3, 7x7) as one DW 7x7 over
    3/4 of the channels (kernels zero-padded to 7x7: exact), then the serial 1x11 -> 11x1 chunk, one concat."""

    def __init__(self, mixer: ChunkConv):
        super().__init__()
        hidden = mixer.conv_s.out_channels
        ref = mixer.conv_s.weight
        first = ((torch.ones(hidden, 1, 1, 1, dtype=ref.dtype), torch.zeros(hidden, dtype=ref.dtype))
                 if isinstance(mixer.conv_i, nn.Identity) else (mixer.conv_i.weight, mixer.conv_i.bias))
        pieces = [first, (mixer.conv_s.weight, mixer.conv_s.bias), (mixer.conv_m.weight, mixer.conv_m.bias)]
        self.small = nn.Conv2d(3 * hidden, 3 * hidden, 7, 1, 3, groups=3 * hidden)
        with torch.no_grad():
            self.small.weight.copy_(torch.cat([pad_kernel(w, (7, 7)) for w, _ in pieces]))
            self.small.bias.copy_(torch.cat([b for _, b in pieces]))
        self.conv_l = mixer.conv_l
        self.split = 3 * hidden

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.small(x[:, :self.split]), self.conv_l(x[:, self.split:])), dim=1)


class SliceWrites(nn.Module):
    """Level-1 ChunkConv writing each chunk's output into one preallocated tensor (no concat)."""

    def __init__(self, mixer: ChunkConv):
        super().__init__()
        self.mixer = mixer

    def forward(self, x: Tensor) -> Tensor:
        out = torch.empty_like(x)
        m = self.mixer
        for i, (conv, chunk) in enumerate(zip((m.conv_i, m.conv_s, m.conv_m, m.conv_l), x.chunk(4, dim=1))):
            width = chunk.shape[1]
            out[:, i * width:(i + 1) * width] = conv(chunk)
        return out


def _replace_mixers(model: nn.Module, wrap) -> nn.Module:
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if isinstance(getattr(module, 'token_mixer', None), ChunkConv):
            module.token_mixer = wrap(module.token_mixer)
    return model


def repnext_layouts(args, x: Tensor) -> None:
    print('\n## RepNeXt token-mixer layouts (fused, exact)\n')
    print(LAYOUT_HEADER)
    for spec in args.repnext:
        train = training_form(spec, args.shape)
        shipped = rep_backbones.fuse(copy.deepcopy(train))
        backward = copy.deepcopy(train)
        backward.block_norm_fold = 'backward'
        layouts = {
            'shipped: level 1 (norm folded forward, identity chunk passed through; concat)': shipped,
            'norm folded backward into the token mixer (identity chunk as DW 1x1 conv_i)':
                rep_backbones.fuse(backward),
            'level 2: one DW 11x11 (+ border term)': copy.deepcopy(train).to_single_branch(),
            'small chunks merged into one DW 7x7 on 3/4 channels': _replace_mixers(shipped, MergedSmallChunks),
            'chunk outputs written into one tensor (no concat)': _replace_mixers(shipped, SliceWrites),
            'official fused (reference, BN kept)': official_fused(train),
        }
        layout_rows(spec, train, layouts, x, args.rounds)


class PointwiseMatmul(nn.Conv2d):
    """A 1x1 conv computed as ``x.permute(0, 2, 3, 1) @ W^T + b``: on a channels-last tensor the
    permute is a view, and the result permuted back is channels-last again."""

    def forward(self, x: Tensor) -> Tensor:
        out = torch.nn.functional.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
        return out.permute(0, 3, 1, 2)


def _pointwise_as_matmul(model: nn.Module) -> nn.Module:
    return _reclassed(model, lambda m: (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1)
                                        and m.groups == 1 and m.padding == (0, 0)), PointwiseMatmul)


def pointwise(args, x: Tensor) -> None:
    print('\n## 1x1 convolutions: convolution kernel vs matmul over channels (fused, channels-last)\n')
    print('| backbone | shipped ms | 1x1 as matmul ms | ratio | max rel. diff to train |')
    print('|---|---|---|---|---|')
    for spec in args.headroom:
        train = training_form(spec, args.shape)
        shipped = rep_backbones.fuse(copy.deepcopy(train)).to(memory_format=torch.channels_last)
        matmul = _pointwise_as_matmul(shipped)
        ms = timed({'conv': lambda: shipped(x), 'matmul': lambda: matmul(x)}, args.rounds)
        print(f'| {spec} | {ms["conv"]:.1f} | {ms["matmul"]:.1f} | {ms["matmul"] / ms["conv"]:.2f} | '
              f'{relative_error(train, matmul, x):.1e} |')


class _NoCorrection(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return nn.Conv2d.forward(self, x)


class _DenseCorrection(BorderCorrectedConv2d):
    def forward(self, x: Tensor) -> Tensor:
        return nn.Conv2d.forward(self, x) - self.deficit_map(x)


class _StripsEveryCall(BorderCorrectedConv2d):
    """The shipped forward with the strips rebuilt on every call (as before they were cached)."""
    def _cached_border_strips(self, x: Tensor, out: Tensor):
        return self.border_strips(x.shape[-2], x.shape[-1], out.shape[-2], out.shape[-1], out.dtype)


def _swap_border_convs(model: nn.Module, cls) -> nn.Module:
    return _reclassed(model, lambda m: isinstance(m, BorderCorrectedConv2d), cls)


def repmobile_layouts(args, x: Tensor) -> None:
    print('\n## RepMobile border correction (fused)\n')
    print(LAYOUT_HEADER)
    for spec in args.repmobile:
        train = training_form(spec, args.shape)
        shipped = rep_backbones.fuse(copy.deepcopy(train))
        layouts = {
            'shipped: in-place border strips, cached per input size': shipped,
            'in-place border strips rebuilt every call': _swap_border_convs(shipped, _StripsEveryCall),
            'dense deficit map (the ONNX path)': _swap_border_convs(shipped, _DenseCorrection),
            'no correction (NOT exact: its cost)': _swap_border_convs(shipped, _NoCorrection),
        }
        layout_rows(spec, train, layouts, x, args.rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sections', nargs='+', choices=('headroom', 'repnext', 'pointwise', 'repmobile'),
                        default=['headroom', 'repnext', 'pointwise', 'repmobile'])
    parser.add_argument('--headroom', nargs='+', default=HEADROOM, metavar='NAME:ARCH')
    parser.add_argument('--repnext', nargs='+', default=['RepNeXt:M0', 'RepNeXt:M3'], metavar='NAME:ARCH')
    parser.add_argument('--repmobile', nargs='+', default=['RepMobile:S'], metavar='NAME:ARCH')
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    x = torch.randn(1, 3, *args.shape)
    print(f'batch 1, NCHW input 1x3x{args.shape[0]}x{args.shape[1]}, {args.threads} threads, median of '
          f'{args.rounds} interleaved rounds; model and weights in the format named')
    sections = {'headroom': headroom, 'repnext': repnext_layouts, 'pointwise': pointwise,
                'repmobile': repmobile_layouts}
    for name in args.sections:
        sections[name](args, x)


if __name__ == '__main__':
    main()
