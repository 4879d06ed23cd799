"""Layers shared by several family files: BatchNorm eps, conv -> BN -> act, the official classifier head; and
the reader of the papers' tables the family files carry."""
# No ``from __future__ import annotations``: torch.fx copies the annotations of the traced root's
# ``forward`` into its generated code, where a string annotation becomes a name TorchScript cannot
# resolve (``Unknown type name '_Tensor_'``).

from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from ..reparam import bn_branch, conv_bn_branch, is_norm, make_conv, merge_branches

# Every family's BatchNorm eps (PyTorch's default; the official checkpoints were trained with it).
BN_EPS = 1e-5


def figures_table(text: str) -> Dict[str, Dict[str, Union[str, int]]]:
    """A paper's table as written in a family file: a header line (``variant`` then figure names), then one
    line per variant, columns separated by spaces -> ``{variant: {figure: text}}``. Figures stay text
    (``'4,073,604'``, ``'142.39M'``: their precision is part of the figure, rep_backbones.complexity reads
    it); the ``input`` column (resolution) becomes an int."""
    header, *lines = [line.split() for line in text.strip().splitlines()]
    if header[0] != 'variant':
        raise ValueError(f"a figures table starts with a 'variant' column, got {header[0]!r}")
    table = {}
    for cells in lines:
        if len(cells) != len(header):
            raise ValueError(f'figures table row {cells} has {len(cells)} cells for {len(header)} columns')
        table[cells[0]] = {key: int(cell) if key == 'input' else cell for key, cell in zip(header[1:], cells[1:])}
    return table


class ConvNormAct(nn.Module):
    """k x k conv (no bias) -> BN -> optional ReLU, with the official key names: ``conv`` and
    ``bn1`` (timm's ConvBnAct) or ``bn`` (``norm_name='bn'``, timm's ConvNormAct inside UIBs).

    Plain ``BatchNorm2d`` + separate activation: timm's ``BatchNormAct2d`` keeps the activation
    inside the norm layer, which a SyncBatchNorm conversion would silently drop.

    ``rep_bn=True`` (stride-1 depthwise convs only) adds RepGhost's BN-only branch on the input,
    summed with the conv's output before the activation. ``switch_to_deploy()`` folds the BN (and
    that branch) into one biased conv: keys become ``conv.{weight,bias}``.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True, norm_name: str = 'bn1', rep_bn: bool = False):
        super().__init__()
        if rep_bn and not (stride == 1 and groups == in_chs == out_chs):
            raise ValueError('a BN-only branch needs a stride-1 depthwise conv')
        if norm_name not in ('bn', 'bn1'):
            raise ValueError(f"norm_name must be 'bn' or 'bn1', got {norm_name!r}")
        self.norm_name = norm_name
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False)
        setattr(self, norm_name, nn.BatchNorm2d(out_chs, eps=BN_EPS))
        self.rep_bn = nn.BatchNorm2d(in_chs, eps=BN_EPS) if rep_bn else None
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        # hasattr, not getattr(self, self.norm_name): TorchScript resolves hasattr when compiling
        y = self.bn(self.conv(x)) if hasattr(self, 'bn') else self.bn1(self.conv(x))
        if self.rep_bn is not None:
            y = y + self.rep_bn(x)
        return self.act(y)

    def conv_bn_pairs(self) -> List[Tuple[str, str]]:
        return [('conv', self.norm_name)]

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        norm = getattr(self, self.norm_name)
        if not is_norm(norm):
            return
        branches = [conv_bn_branch(self.conv, norm)]
        if self.rep_bn is not None:
            branches.append(bn_branch(self.rep_bn, groups=self.conv.groups))
        self.conv = make_conv(self.conv, *(t.detach().clone() for t in merge_branches(branches)))
        setattr(self, self.norm_name, nn.Identity())
        self.rep_bn = None

    reparameterize = switch_to_deploy


class ClassifierForm:
    """timm's classifier interface for the classifier forms (mixed in before the backbone class):
    ``forward(x) = forward_head(forward_features(x))``; ``forward_features`` is the backbone's last
    map ``[N, num_features, H, W]``, ``forward_head(x, pre_logits=True)`` the pooled vector
    ``[N, head_hidden_size]`` the final layer reads (wider than ``num_features`` where the head has a
    hidden layer), plus ``get_classifier`` / ``reset_classifier`` / ``prune_intermediate_layers`` and
    ``num_classes`` / ``in_chans`` / ``global_pool``. A family names its final layer (``classifier_name``)
    and the layers between the last stage and it (``pre_logits_layers``), sets ``num_features`` /
    ``head_hidden_size``, builds a new final layer in ``new_classifier(num_classes)`` and removes the
    stages after feature ``i`` in ``drop_stages_after(i)``; its ``forward_head`` pools with
    ``global_pool`` and flattens with ``flatten``.

    A family timm does not have registers its classifier as timm models ``{timm_prefix}_{variant}``
    (:mod:`rep_backbones.timm_models`): ``timm_release(arch)`` gives the release's pretrained-cfg fields,
    ``timm_defaults`` constructor defaults, ``timm_flatten_sequential`` whether timm's feature wrapper
    must unroll the top-level containers to find the ``feature_info`` modules (``'stages.0'``)."""
    classifier_name = 'classifier'
    pre_logits_layers: Tuple[str, ...] = ()
    # The paper's figures for the family's variants (source, note, variants: name -> figures), which
    # rep_backbones.complexity compares with our counts; see each family file's PAPER_TABLE.
    paper_table: Optional[dict] = None
    timm_prefix: Optional[str] = None
    timm_defaults: dict = {}
    timm_flatten_sequential = True

    @classmethod
    def timm_release(cls, arch: str) -> dict:
        """``first_conv``, ``classifier`` and the release (``file_name``, ``url``, ``key``, ``origin``,
        ``license``, ``input_size``) of variant ``arch``, for its timm ``pretrained_cfg``."""
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_maps(x)[-1]     # the backbone's maps (out_indices = (last,))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: Tensor, indices: Optional[Union[int, List[int]]] = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW', intermediates_only: bool = False
                              ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """timm's feature API (``features_only=True, feature_cls='getter'``): the maps of the
        ``feature_info`` entries ``indices`` (None: all; an int n: the last n), each
        ``[N, num_chs, H / reduction, W / reduction]``; unless ``intermediates_only``, preceded by the
        final map (``forward_features``' output; with ``stop_early`` the last map taken). The nets have
        no final norm, so ``norm`` changes nothing. After ``prune_intermediate_layers`` the entries past
        the last kept stage are not returned (their stages are gone), as in timm."""
        if output_fmt != 'NCHW':
            raise ValueError(f"only output_fmt='NCHW' is supported, got {output_fmt!r}")
        take, _ = feature_take_indices(len(self.feature_info), indices)
        final = self.out_indices[-1]        # the last stage (len(feature_info) - 1 unless pruned)
        take = [i for i in take if i <= final]
        extra = not (intermediates_only or stop_early or final in take)
        maps = self._walk_stages(x, self.with_cp and self.training, take + [final] if extra else take)
        if intermediates_only:
            return maps
        return maps[-1], maps[:-1] if extra else maps

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """timm's pruning before ``forward_intermediates(indices=...)``: the stages after the last
        ``feature_info`` entry taken go, and with them (the head is sized for the last stage), or with
        ``prune_head``, the head: ``pre_logits_layers``, pooling and the final layer, so that ``forward``
        returns the last kept map ``[N, num_chs, H, W]``. Returns the kept indices (``indices``
        normalised as ``forward_intermediates`` takes them). No final norm: ``prune_norm`` changes nothing."""
        take, last = feature_take_indices(len(self.feature_info), indices)
        prune_end = last < self.out_indices[-1]
        if prune_end:
            self.drop_stages_after(last)
            self.out_indices = (last,)
            self.num_features = self.feature_info[last]['num_chs']
        if prune_end or prune_head:
            for name in self.pre_logits_layers:
                setattr(self, name, nn.Identity())
            self.head_hidden_size = self.num_features
            self.reset_classifier(0, '')
        return take

    def drop_stages_after(self, index: int) -> None:
        """Remove the modules that only compute the ``feature_info`` entries after ``index``."""
        raise NotImplementedError

    def finish_classifier(self, num_classes: int, deploy: bool, global_pool: str = 'avg') -> None:
        """End of a classifier's ``__init__``: pooling and the final layer, then fusion if asked for."""
        self.reset_classifier(num_classes, global_pool)
        if deploy:
            self.switch_to_deploy()

    def is_head_key(self, key: str) -> bool:
        return False            # a classifier loads its head too

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new final layer for ``num_classes`` (0: identity) and pooling ``global_pool`` (None: the
        current one; a timm ``SelectAdaptivePool2d`` type that keeps the width, the head being sized for
        it; ``''``: none, so that ``forward`` with ``num_classes=0`` returns the head's unpooled map
        ``[N, C, H, W]``, as timm's models do), on the model's device and dtype and in its train/eval mode."""
        pool = SelectAdaptivePool2d(pool_type=self.global_pool.pool_type if global_pool is None else global_pool)
        if pool.feat_mult() != 1:
            raise ValueError(f'global_pool={global_pool!r} changes the pooled width, for which the head is not sized')
        self.num_classes = num_classes
        layer = self.new_classifier(num_classes) if num_classes else nn.Identity()
        flatten = nn.Flatten(1) if pool.pool_type else nn.Identity()     # no pooling: keep the map
        ref = next(self.parameters())
        for name, module in (('global_pool', pool), ('flatten', flatten), (self.classifier_name, layer)):
            setattr(self, name, module.to(device=ref.device, dtype=ref.dtype).train(self.training))


class OfficialClassifierHead(ClassifierForm):
    """The RepGhost-style ImageNet head: GAP -> 1x1 conv to ``hidden`` *with bias* (no BN) -> ReLU
    -> dropout -> Linear. A mixin of the classifier forms: the layers are the classifier's own
    attributes (official keys ``conv_head``, ``classifier``); call :meth:`init_head` from the classifier's
    ``__init__`` and :meth:`forward_head` on the last feature map. Without pooling (``global_pool=''``)
    the 1x1 conv and ReLU run on the whole map, as in timm's GhostNet / MobileNetV3 heads."""
    pre_logits_layers = ('conv_head', 'act2')

    def init_head(self, in_chs: int, num_classes: int, drop_rate: float, hidden: int = 1280) -> None:
        self.drop_rate = drop_rate
        self.conv_head = nn.Conv2d(in_chs, hidden, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.num_features, self.head_hidden_size = in_chs, hidden

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.act2(self.conv_head(self.global_pool(x)))
        x = F.dropout(self.flatten(x), p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.head_hidden_size, num_classes)
