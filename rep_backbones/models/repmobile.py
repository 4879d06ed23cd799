"""RepMobile (Zhang et al., "RepMobile: A Deep Mobile VGG-style CNN with Better Identity Mapping") as a
multi-scale backbone and as the ImageNet classifier, with the fusion the official release lacks.

Training-form block (official keys ``conv_pw`` / ``conv_dw`` / ``ClaSiLU_gate``), input ``x``::

    y = conv_pw.1(conv_pw.0(x)) + x            # BN -> 1x1 conv (bias); stride 2: x added to both halves
    a = y * sigmoid(y + gate(x))               # ClaSiLU; gate = GAP -> BN -> 1x1 conv (bias), on x
    out = conv_dw.1(conv_dw.0(a)) + down(a)    # BN -> 3x3 depthwise conv (bias, stride s)
                                               # down = Identity (s=1) or AvgPool2d(3, 2, 1) (s=2)

Deploy form (``switch_to_deploy``; no BatchNorm, no shortcut, no pooling left)::

    y = conv_pw(x)                             # pre-BN, identity / [I; I] folded into the 1x1 kernel
    a = y * sigmoid(y + gate(x))               # gate's BN folded into its 1x1 conv (after GAP: exact)
    out = conv_dw(a)                           # pre-BN, identity / 1/9 avg-pool folded into the 3x3

Exactness at the borders. The pre-BNs in front of 1x1 convs fold exactly. The BN in front of the
zero-padded depthwise 3x3 is the one that does not: ``a * s + t`` is what the conv saw in the image,
but the padding stayed 0 instead of becoming ``t``. Moving the BN backwards into ``conv_pw`` is not
possible (ClaSiLU is between them), padding with ``-t/s`` needs a per-channel pad value (no such
F.pad; and ``s`` may be 0) plus a full-size copy, and a full bias map costs an extra pass over the
output. The deficit is data-independent and lives only in the outermost row/column on each side, so
the deploy depthwise conv is :class:`~rep_backbones.reparam.BorderCorrectedConv2d`: one biased conv
with the interior bias, then a per-channel constant subtracted in place from the 8 border strips
(4 edges + 4 corners; fewer for stride 2 with even sizes). The shortcut branches (identity,
count_include_pad average pooling) read the un-normalized ``a`` with the same zero padding, so they
fold into the kernel with no border term.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from timm.layers import register_notrace_module
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..reparam import (
    BorderCorrectedConv2d,
    avg_pool_kernel,
    bn_scale_shift,
    fold_preceding_affine,
    fuse_bn_conv,
    identity_kernel,
    make_conv,
    tiled_identity_kernel,
)
from .base import RepBackbone, apply_norm_cfg, arch_aliases
from .layers import BN_EPS, ClassifierForm, figures_table
from .registry import register_backbone, register_classifier

# The deploy depthwise conv finds its border strips by Python arithmetic on the input size, which a
# symbolic trace cannot follow: timm's FX tracer keeps it as one module call (TorchScript compiles it).
register_notrace_module(BorderCorrectedConv2d)


class RepMobileArch(NamedTuple):
    dims: Tuple[int, int, int, int]       # channels of layer0..3 (stem: dims[0] // 2, stride 2)
    depths: Tuple[int, int, int, int]     # blocks per layer; the first one has stride 2 and doubles channels


ARCHS: Dict[str, RepMobileArch] = {
    'S': RepMobileArch((64, 128, 256, 512), (3, 6, 12, 3)),
    'M': RepMobileArch((80, 160, 320, 640), (3, 6, 15, 3)),
    'L': RepMobileArch((96, 192, 384, 768), (4, 8, 20, 8)),
}
# 'small', 'repmobile_s', 'repmobile_small', ...
ALIASES = arch_aliases(ARCHS, prefixes=('repmobile_',), extra={
    alias: name for name, word in (('S', 'small'), ('M', 'medium'), ('L', 'large'))
    for alias in (word, f'repmobile_{word}')})

# RepMobile's published ImageNet classifier figures, beside our counts in rep_backbones.complexity.
PAPER_TABLE = dict(
    source='zhanghao5201/RepMobile README.md + exact counts of the official models/repmobile.py (variants: main.py)',
    note='params: classifier without the distillation head (training form; the official code has no fusion); '
         'backbone = stem + layer0-3', classifier_kwargs=dict(distillation=False), readme_params_form='train',
    variants=figures_table("""
        variant  train_params  backbone_train_params  macs    readme_params  readme_macs
        S        5,719,944     3,117,984              0.417G  5.7M           0.4G
        M        8,205,552     5,472,520              0.695G  8.2M           0.7G
        L        18,361,624    15,497,520             1.374G  18.4M          1.4G
    """))


class RepMobileBlock(nn.Module):
    """One RepMobile block; ``switch_to_deploy()`` turns it into conv1x1 -> ClaSiLU -> dw3x3 in place.

    Submodule indices stay as in the official layout after fusion (folded BNs become ``nn.Identity``),
    so deploy keys are ``conv_pw.1.*``, ``ClaSiLU_gate.2.*`` and ``conv_dw.1.{weight,bias,border_taps}``.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        if stride not in (1, 2) or out_chs != in_chs * stride:
            raise ValueError(f'RepMobile block: stride {stride} needs out = in * stride, got {in_chs}->{out_chs}')
        self.stride = stride
        self.deploy = False
        self.conv_pw = nn.Sequential(nn.BatchNorm2d(in_chs, eps=BN_EPS), nn.Conv2d(in_chs, out_chs, 1))
        self.conv_dw = nn.Sequential(nn.BatchNorm2d(out_chs, eps=BN_EPS),
                                     nn.Conv2d(out_chs, out_chs, 3, stride, 1, groups=out_chs))
        self.ClaSiLU_gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(in_chs, eps=BN_EPS),
                                          nn.Conv2d(in_chs, out_chs, 1))
        self.down = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv_pw(x)
        if not self.deploy:
            y = y + (torch.cat((x, x), dim=1) if self.stride == 2 else x)
        y = y * torch.sigmoid(y + self.ClaSiLU_gate(x))
        out = self.conv_dw(y)
        if not self.deploy:
            out = out + self.down(y)
        return out

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if self.deploy:
            return
        # 1x1 conv: its pre-BN (no padding: exact) and the identity / doubled identity shortcut.
        bn, conv = self.conv_pw
        kernel, bias = fold_preceding_affine(conv.weight, conv.bias, *bn_scale_shift(bn))
        kernel = kernel + tiled_identity_kernel(conv.in_channels, self.stride, dtype=kernel.dtype,
                                                device=kernel.device)
        self.conv_pw = nn.Sequential(nn.Identity(), make_conv(conv, kernel, bias))
        # Gate: BN after global pooling, before a 1x1 conv: exact.
        pool, bn, conv = self.ClaSiLU_gate
        self.ClaSiLU_gate = nn.Sequential(pool, nn.Identity(),
                                          make_conv(conv, *fold_preceding_affine(conv.weight, conv.bias,
                                                                                 *bn_scale_shift(bn))))
        # Depthwise 3x3: pre-BN with the border correction, identity / avg-pool merged into the kernel.
        bn, conv = self.conv_dw
        chs, ref = conv.out_channels, conv.weight
        shortcut = (avg_pool_kernel(chs, 3, dtype=ref.dtype, device=ref.device) if self.stride == 2 else
                    identity_kernel(chs, chs, (3, 3), dtype=ref.dtype, device=ref.device))
        self.conv_dw = nn.Sequential(nn.Identity(),
                                     fuse_bn_conv(bn, conv, (shortcut, torch.zeros_like(conv.bias))))
        self.down = nn.Identity()
        self.deploy = True

    reparameterize = switch_to_deploy

    @torch.no_grad()
    def split_identity(self) -> None:
        """On the fused block, in place and exact: take the ``[I; I]`` shortcut back out of the 1x1
        kernel, ``conv_pw.1`` becoming ``conv1x1(x) + cat(x, x)`` (:class:`SplitShortcut`). The kernel
        then keeps its trained range, which INT8 quantizes better. A no-op when already split."""
        conv = self.conv_pw[1]
        if isinstance(conv, SplitShortcut):
            return
        conv.weight -= tiled_identity_kernel(conv.in_channels, self.stride, dtype=conv.weight.dtype,
                                             device=conv.weight.device)
        self.conv_pw[1] = SplitShortcut(conv, repeats=self.stride)


class SplitShortcut(nn.Module):
    """``conv(x) + scale * x``, ``x`` repeated ``repeats`` times along channels (``scale``: ``[C]``
    or None for 1): an identity shortcut kept out of a fused kernel as an Add."""

    def __init__(self, conv: nn.Conv2d, scale: Optional[Tensor] = None, repeats: int = 1):
        super().__init__()
        self.conv = conv
        self.register_buffer('scale', None if scale is None else scale.detach().reshape(1, -1, 1, 1).clone())
        self.repeats = repeats

    def forward(self, x: Tensor) -> Tensor:
        short = x if self.scale is None else x * self.scale
        return self.conv(x) + (short.repeat(1, self.repeats, 1, 1) if self.repeats > 1 else short)


@register_backbone
class RepMobile(RepBackbone):
    """RepMobile backbone: ``stem`` (conv/BN/ReLU, stride 2) then ``layer0 … layer3`` (official keys).

    Features (``out_indices``): 0..3 = outputs of ``layer0..3`` at strides 4/8/16/32 with ``dims``
    channels (S 64/128/256/512, M 80/160/320/640, L 96/192/384/768). Stages for ``frozen_stages``:
    stem, layer0, layer1, layer2, layer3. ``norm_cfg=dict(type='SyncBN')`` converts every BatchNorm
    (what the official detection code hard-codes). Classification checkpoints (``{'model': ...}``)
    load directly; ``head.*`` / ``classifier.*`` keys are ignored and reported.
    """
    arch_settings = ARCHS
    arch_aliases = ALIASES
    representative_archs = ('S',)
    int8_layout = 'identity-split'

    def __init__(self, arch: str = 'S', out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, deploy: bool = False, norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, in_channels: int = 3, with_cp: bool = False):
        super().__init__(out_indices, frozen_stages, norm_eval, deploy, init_cfg, with_cp)
        self.arch = self.resolve_arch(arch)
        dims, depths = ARCHS[self.arch]
        stem_chs = dims[0] // 2
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_chs, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(stem_chs, eps=BN_EPS), nn.ReLU(inplace=True))
        self.feature_info = []
        prev, stride = stem_chs, 2
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = [RepMobileBlock(prev, dim, 2)] + [RepMobileBlock(dim, dim, 1) for _ in range(depth - 1)]
            self.add_module(f'layer{i}', nn.Sequential(*blocks))
            prev, stride = dim, stride * 2
            self.feature_info.append(dict(num_chs=dim, reduction=stride, module=f'layer{i}'))
        if norm_cfg is not None:
            apply_norm_cfg(self, norm_cfg)
        self._finish_init()

    def feature_stages(self) -> List[List[nn.Module]]:
        return [[self.stem]] + [[getattr(self, f'layer{i}')] for i in range(len(self.feature_info))]

    def _forward_stages(self, x: Tensor) -> List[Tensor]:
        """``feature_stages()``'s walk with the four layers spelled out: TorchScript can neither look
        attributes up by a computed name nor iterate over a Python list of modules."""
        last = self.out_indices[-1]
        outs: List[Tensor] = []
        x = self.layer0(self.stem(x))
        if 0 in self.out_indices:
            outs.append(x.contiguous())    # NCHW out (see RepBackbone._walk_stages)
        if last >= 1:
            x = self.layer1(x)
            if 1 in self.out_indices:
                outs.append(x.contiguous())
        if last >= 2:
            x = self.layer2(x)
            if 2 in self.out_indices:
                outs.append(x.contiguous())
        if last >= 3:
            x = self.layer3(x)
            if 3 in self.out_indices:
                outs.append(x.contiguous())
        return outs

    def to_int8_layout(self) -> str:
        """Every block's shortcut split out of its 1x1 kernel (:meth:`RepMobileBlock.split_identity`)."""
        layout = super().to_int8_layout()
        for block in self.modules():
            if isinstance(block, RepMobileBlock):
                block.split_identity()
        return layout

    @classmethod
    def state_dict_form(cls, state_dict) -> str:
        keys = list(state_dict)
        if any(k.endswith('.conv_pw.0.running_var') for k in keys):
            return 'train'
        if any(k.endswith('.conv_dw.1.border_taps') for k in keys):
            return 'deploy'
        raise ckpt.CheckpointError('not a RepMobile state dict: no block keys (\'layerN.M.conv_pw.0.*\' for '
                                   f"the training form, '...conv_dw.1.border_taps' fused); first keys: {keys[:5]}")


class RepMobileHead(nn.Module):
    """The official ``Classfier``: Linear (no bias) -> BN1d -> ReLU -> Dropout -> Linear, optionally
    twice (``classifier_dist``, DeiT-style distillation; the two are averaged in eval mode). Fusion
    folds each BN1d into its Linear (the default walk's ``nn.Sequential`` rule)."""

    def __init__(self, dim: int, num_classes: int, distillation: bool, drop_rate: float):
        super().__init__()

        def mlp() -> nn.Sequential:
            return nn.Sequential(nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, eps=BN_EPS),
                                 nn.ReLU(inplace=True), nn.Dropout(drop_rate), nn.Linear(dim, num_classes))
        self.distillation = distillation
        self.classifier = mlp()
        self.classifier_dist = mlp() if distillation else None

    def forward(self, x: Tensor):
        if self.classifier_dist is None:
            return self.classifier(x)
        out, out_dist = self.classifier(x), self.classifier_dist(x)
        if self.training and not torch.jit.is_scripting():    # scripted: one output type, the eval one
            return out, out_dist
        return (out + out_dist) / 2


@register_classifier('RepMobile')
class RepMobileClassifier(ClassifierForm, RepMobile):
    """The ImageNet classifier: body, ``head`` (1x1 conv to max(1024, dims[3]) + BN + ReLU), GAP,
    ``classifier`` (:class:`RepMobileHead`). Keys equal the official checkpoints' (``distillation``
    must match the file: with it, ``classifier.classifier_dist.*`` exist). ``switch_to_deploy``
    fuses the body and the head's BatchNorms too (the default walk)."""
    timm_prefix = 'repmobile'
    paper_table = PAPER_TABLE
    timm_flatten_sequential = False         # feature modules 'layer0'..'layer3' are direct children
    pre_logits_layers = ('head',)

    @classmethod
    def timm_release(cls, arch: str) -> dict:
        # The repository links its ImageNet weights from its readme (no direct release URL).
        return dict(first_conv='stem.0', classifier='classifier.classifier.4', file_name=f'RepMobile_{arch}.pth',
                    key='model', origin='https://github.com/zhanghao5201/RepMobile',
                    license='none stated by the repository')

    def __init__(self, arch: str = 'S', num_classes: int = 1000, distillation: bool = False,
                 drop_rate: float = 0.2, deploy: bool = False, init_cfg: Optional[dict] = None,
                 in_channels: int = 3, global_pool: str = 'avg'):
        super().__init__(arch, out_indices=(3,), deploy=False, init_cfg=init_cfg, in_channels=in_channels)
        dim = self.feature_info[-1]['num_chs']
        final_dim = max(1024, dim)
        self.head = nn.Sequential(nn.Conv2d(dim, final_dim, 1, bias=False), nn.BatchNorm2d(final_dim, eps=BN_EPS),
                                  nn.ReLU(inplace=True))
        self.num_features, self.head_hidden_size = dim, final_dim
        self.distillation, self.drop_rate, self.in_chans = distillation, drop_rate, in_channels
        self.finish_classifier(num_classes, deploy, global_pool)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups in depth order (layer-wise decay): stem, layers (``coarse``) or
        blocks, the 1x1 ``head`` conv; the classifier comes last."""
        return dict(stem=r'^stem', blocks=[
            (r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)', None), (r'^head\.', (99999,))])

    def forward_head(self, x: Tensor, pre_logits: bool = False):
        x = self.flatten(self.global_pool(self.head(x)))
        return x if pre_logits else self.classifier(x)

    def drop_stages_after(self, index: int) -> None:
        """The layers after ``layer{index}`` become ``nn.Identity``: the walks name all four, and
        ``out_indices`` stops them at ``index``."""
        for i in range(index + 1, len(self.feature_info)):
            setattr(self, f'layer{i}', nn.Identity())

    def new_classifier(self, num_classes: int) -> nn.Module:
        return RepMobileHead(self.head_hidden_size, num_classes, self.distillation, self.drop_rate)
