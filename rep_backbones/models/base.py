"""What every backbone of the package shares: variants, feature outputs, freezing, fusion, loading.

A family subclasses :class:`RepBackbone` and provides

* ``arch_settings``: canonical variant name -> settings (``arch_aliases`` adds spellings);
* ``feature_info``: one dict per feature map it can emit (``num_chs``, ``reduction``, ``module``),
  the deepest block at each stride first, in stride order;
* ``feature_stages()``: ``[stem_modules, modules of feature 0, modules of feature 1, ...]``; running them in
  order produces feature ``i`` after list ``i + 1`` (modules are looked up on every call, so fusion
  that replaces submodules needs no bookkeeping);
* ``_forward_stages(x)`` (optional): the same walk written over the family's own containers, which
  TorchScript compiles (the default walks ``feature_stages()``, a Python list, and does not script);
* ``conv_bn_pairs()`` (optional): its own ``(conv, bn)`` pairs outside any block (the stem's
  ``conv_stem``/``bn1``), and ``foreign_conv_bn_pairs`` for timm blocks it uses (blocks of the
  package declare theirs with their own ``conv_bn_pairs()``; see CONTRIBUTING.md, "Fusion vocabulary");
* ``_reparameterize()`` only where fusion order matters (RepNeXt): the default is the package's one
  walk, :func:`~rep_backbones.reparam.reparameterize_tree`;
* ``state_dict_form(sd)``: ``'train'`` or ``'deploy'``, from the keys of a state dict, and optionally
  ``convert_state_dict`` for official key layouts.

The base class gives mm-style arguments (``out_indices``, ``frozen_stages``, ``norm_eval``, ``deploy``,
``with_cp``, ``init_cfg``), ``switch_to_deploy()`` / ``reparameterize()`` and checkpoint loading with a
report.

The fusion protocol (timm's ``reparameterize_model`` semantics, the same in every file): a module
changes itself in place with ``switch_to_deploy()`` (also reachable as ``reparameterize()``), and a
method named ``fuse()``, where one exists, *returns* the module that replaces it.
``rep_backbones.fuse(model)``, ``backbone.switch_to_deploy()`` and
``timm.utils.model.reparameterize_model(model)`` give the same fused model.
"""
# No ``from __future__ import annotations``: torch.fx copies the annotations of the traced root's
# ``forward`` into its generated code, where a string annotation becomes a name TorchScript cannot
# resolve (``Unknown type name '_Tensor_'``).

import logging
from typing import Callable, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .. import checkpoint as ckpt
from ..reparam import conv_bn_pairs, fold_bn_pairs_in_state_dict, fold_conv_bn_pairs, is_norm, reparameterize_tree
from .layers import BN_EPS

logger = logging.getLogger('rep_backbones')


class NoOfficialForm(ValueError):
    """The family (or this variant) has no official fusion to imitate."""


class RepBackbone(nn.Module):
    """Base of every re-parameterizable backbone; returns a tuple of feature maps.

    Args:
        arch: variant name (case-insensitive; see ``arch_settings`` / ``arch_aliases``).
        out_indices: indices into ``feature_info`` to return; default the maps at strides 4/8/16/32.
        frozen_stages: -1 trains everything; 0 freezes the stem; ``n`` the stem and the first ``n``
            stages (parameters fixed, their norm layers kept in eval mode).
        norm_eval: keep every BatchNorm (BN and SyncBN) in eval mode while training, so that the
            running statistics stay as loaded (usual for small detection batches).
        deploy: build the fused (inference) structure directly; load fused checkpoints into it.
        with_cp: activation checkpointing per block while training (recompute in backward: less
            memory, more time; BatchNorm running statistics see the recomputation too, as in mmdet's
            ResNet). Off by default.
        init_cfg: ``None`` (PyTorch default init) or ``dict(type='Pretrained', checkpoint=PATH,
            prefix=None, checkpoint_key=None, strict=True, trust=None)``.
    """
    arch_settings: ClassVar[Dict[str, object]] = {}
    arch_aliases: ClassVar[Dict[str, str]] = {}
    # (conv, bn) pairs of block classes the package does not define (timm's), by class.
    foreign_conv_bn_pairs: ClassVar[Dict[type, Tuple[Tuple[str, str], ...]]] = {}
    # The variants the family tables and benchmarks measure (``registry.family_specs``).
    representative_archs: ClassVar[Tuple[str, ...]] = ()
    default_out_indices: ClassVar[Tuple[int, ...]] = (0, 1, 2, 3)
    # Memory format of the deploy form's weights. Channels-last conv weights make PyTorch's CPU
    # convolutions take the oneDNN NHWC path even for an NCHW input (activations stay channels-last
    # inside; the returned maps are made NCHW): faster for every family here (docs/benchmarks.md,
    # "Memory format"). TimmRepBackbone keeps NCHW.
    deploy_memory_format: ClassVar[torch.memory_format] = torch.channels_last
    # ``initializer(module, init_cfg)`` for init_cfg types other than 'Pretrained'; the mm layer sets
    # it to mmengine's ``initialize`` (kept out of here: this module imports nothing from mm).
    external_initializer: ClassVar[Optional[Callable]] = None
    # What :meth:`to_int8_layout` makes of the fused backbone ('default': it leaves it as fused).
    int8_layout: ClassVar[str] = 'default'
    # Python-side properties that TorchScript would otherwise try to compile with the model
    __jit_unused_properties__: ClassVar[List[str]] = ['out_channels', 'out_strides', 'grad_checkpointing']

    def __init__(self, out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, deploy: bool = False, init_cfg: Optional[dict] = None,
                 with_cp: bool = False):
        super().__init__()
        # First child on purpose: timm's reparameterize_model walks the children of the model it is
        # given, never the model itself, so the backbone's own pairs (stem conv + BN) would stay
        # unfused when the backbone is the root. Its reparameterize() runs switch_to_deploy().
        self.reparam_entry = _ReparamEntry(self)
        self._fusing = False
        self.with_cp = with_cp
        self.out_indices = tuple(self.default_out_indices if out_indices is None else out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.deploy = False
        self.init_cfg = init_cfg
        self._wants_deploy = deploy
        # Any load_state_dict that reaches this module (mmengine's load_from / resume / Pretrained
        # with a prefix, plain PyTorch) goes through the same form check and key conversion.
        self._register_load_state_dict_pre_hook(self._check_loaded_keys)

    # -- construction helpers --------------------------------------------------------------------
    @classmethod
    def resolve_arch(cls, arch: str) -> str:
        """Canonical variant name for ``arch`` (case-insensitive); error lists the valid names."""
        if not isinstance(arch, str):
            raise TypeError(f'{cls.__name__}: arch must be a variant name (str), got {arch!r}')
        lookup = {name.lower(): name for name in cls.arch_settings}
        lookup.update({alias.lower(): name for alias, name in cls.arch_aliases.items()})
        name = lookup.get(arch.strip().lower())
        if name is None:
            valid = ', '.join(repr(n) for n in cls.arch_settings)
            raise ValueError(f'{cls.__name__}: unknown arch {arch!r}; valid variants: {valid}')
        return name

    def _finish_init(self) -> None:
        """Call at the end of a subclass ``__init__``: validates options, applies deploy/freezing."""
        n = len(self.feature_info)
        if not self.out_indices:
            raise ValueError(f'{type(self).__name__}: out_indices is empty')
        for i in self.out_indices:
            if not isinstance(i, int) or not -n <= i < n:
                raise ValueError(f'{type(self).__name__}: out_indices {self.out_indices} out of range; '
                                 f'valid indices are 0..{n - 1} ({self._describe_features()})')
        self.out_indices = tuple(sorted(i % n for i in self.out_indices))
        if len(set(self.out_indices)) != len(self.out_indices):
            raise ValueError(f'{type(self).__name__}: out_indices {self.out_indices} has duplicates')
        if not -1 <= self.frozen_stages <= n:
            raise ValueError(f'{type(self).__name__}: frozen_stages must be in -1..{n}, '
                             f'got {self.frozen_stages}')
        if self._wants_deploy:
            self.switch_to_deploy()
        self._freeze_stages()

    def _describe_features(self) -> str:
        return ', '.join(f"{i}: {f['num_chs']} ch @ stride {f['reduction']}"
                         for i, f in enumerate(self.feature_info))

    @property
    def out_channels(self) -> List[int]:
        """Channels of the returned maps, in order (what FPN's ``in_channels`` needs)."""
        return [self.feature_info[i]['num_chs'] for i in self.out_indices]

    @property
    def out_strides(self) -> List[int]:
        return [self.feature_info[i]['reduction'] for i in self.out_indices]

    # -- to implement ----------------------------------------------------------------------------
    def feature_stages(self) -> List[List[nn.Module]]:
        raise NotImplementedError

    def conv_bn_pairs(self) -> List[Tuple[str, str]]:
        """The backbone's own ``(conv, bn)`` pairs outside any block (e.g. the stem's ``conv_stem`` /
        ``bn1``); ``bn`` must read exactly ``conv``'s output. Blocks declare theirs the same way, and
        ``foreign_conv_bn_pairs`` those of classes the package does not define
        (:func:`~rep_backbones.reparam.conv_bn_pairs`)."""
        return []

    def _reparameterize(self) -> None:
        """Fold every training-time branch and every BatchNorm in place (the default walk)."""
        reparameterize_tree(self, self.foreign_conv_bn_pairs)
        fold_conv_bn_pairs(self, self.foreign_conv_bn_pairs)

    @classmethod
    def state_dict_form(cls, state_dict) -> str:
        """``'train'`` or ``'deploy'``: which structure a state dict was saved from."""
        raise NotImplementedError

    def convert_state_dict(self, state_dict: Dict[str, Tensor], form: str) -> Dict[str, Tensor]:
        """Official layouts that differ from this model's. Default: a deploy-form file whose conv+BN
        pairs were left unfused (the official converters keep them) gets them folded."""
        if form == 'deploy':
            fold_bn_pairs_in_state_dict(state_dict, self.conv_bn_pair_names(), eps=BN_EPS)
        return state_dict

    def conv_bn_pair_names(self) -> List[Tuple[str, str]]:
        """Dotted names of every ``(conv, bn)`` pair the walk folds, by the walk's own rule
        (:func:`~rep_backbones.reparam.conv_bn_pairs`; train or deploy form: a folded BN stays as
        ``nn.Identity`` under its name)."""
        pairs = []
        for name, module in self.named_modules():
            prefix = f'{name}.' if name else ''
            pairs += [(prefix + conv, prefix + bn) for conv, bn in conv_bn_pairs(module, self.foreign_conv_bn_pairs)]
        return pairs

    @staticmethod
    def is_head_key(key: str) -> bool:
        """Keys of a classification checkpoint that a backbone ignores (reported, not loaded)."""
        return key.split('.')[0] in ('classifier', 'head', 'head_dist', 'conv_head', 'fc')

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor):
        """The maps of ``out_indices`` as a tuple (a list once scripted)."""
        outs = self.forward_maps(x)
        if torch.jit.is_scripting():
            return outs     # TorchScript has no variable-length tuples: a scripted backbone returns a list
        else:
            return tuple(outs)

    def forward_maps(self, x: Tensor) -> List[Tensor]:
        """The maps of ``out_indices``, in order, as a list (``forward`` returns them as a tuple)."""
        if not torch.jit.is_scripting():    # resolved when compiling: no activation checkpointing there
            if self.with_cp and self.training:
                return self._walk_stages(x, checkpointed=True)
        return self._forward_stages(x)

    def _forward_stages(self, x: Tensor) -> List[Tensor]:
        """Runs the stages without checkpointing. This default walks ``feature_stages()``, a Python
        list TorchScript cannot compile; the families override it with the same walk written over
        their own containers, which scripts."""
        return self._walk_stages(x, checkpointed=False)

    def _walk_stages(self, x: Tensor, checkpointed: bool, indices: Optional[Sequence[int]] = None) -> List[Tensor]:
        """The maps of ``indices`` (default ``out_indices``) in stage order; the walk stops after the last."""
        indices = self.out_indices if indices is None else indices
        outs = []
        last = max(indices)
        for idx, modules in enumerate(self.feature_stages()):
            if checkpointed:
                for segment in _checkpoint_segments(modules):
                    x = checkpoint(segment, x, use_reentrant=False)
            else:
                for module in modules:
                    x = module(x)
            feature = idx - 1
            if feature in indices:
                outs.append(x.contiguous())    # NCHW out, whatever the deploy memory format inside:
                # compiled ops downstream (mmcv's RoIAlign) read raw NCHW memory
            if feature == last:
                break
        return outs

    # -- training behaviour ----------------------------------------------------------------------
    @property
    def grad_checkpointing(self) -> bool:
        """timm's name for ``with_cp``."""
        return self.with_cp

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch for ``with_cp``: activation checkpointing per block while training."""
        self.with_cp = enable

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for modules in self.feature_stages()[:self.frozen_stages + 1]:
            for module in modules:
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if is_norm(module):
                    module.eval()
        return self

    # -- fusion ----------------------------------------------------------------------------------
    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fuse in place into the inference structure (no BatchNorm left). A no-op when fused."""
        if self.deploy or self._fusing:    # _fusing: the walk reaches reparam_entry too
            return
        self._fusing = True
        try:
            self._reparameterize()
        finally:
            self._fusing = False
        self.to(memory_format=self.deploy_memory_format)
        self.deploy = True
        self.train(self.training)    # modules made by fusion start in train mode: give them the model's

    def reparameterize(self) -> None:
        """timm's name for :meth:`switch_to_deploy`."""
        self.switch_to_deploy()

    def to_official_form(self) -> nn.Module:
        """In place, on the training form: fuse the way the family's official converter does (what
        official fused files hold; the benchmark's baseline). Returns self. Families whose release
        ships no converter raise :class:`NoOfficialForm`."""
        raise NoOfficialForm(f'{type(self).__name__} has no official fusion to imitate (its release ships '
                             'no converter)')

    # -- INT8 ------------------------------------------------------------------------------------
    def prepare_int8_fusion(self) -> None:
        """On the training form, before fusing for INT8: steer the fusion towards the family's INT8
        layout (RepNeXt fuses straight to its single branch). Default: nothing."""

    def to_int8_layout(self) -> str:
        """On the fused backbone, in place: the family's INT8-friendlier exact layout (same float
        function, a graph that quantizes with less error); returns its name, ``int8_layout``."""
        if not self.deploy:
            raise ValueError(f'{type(self).__name__} is not fused (deploy=False): call switch_to_deploy() '
                             'or rep_backbones.fuse() before to_int8_layout()')
        return self.int8_layout

    # -- checkpoints -----------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Apply ``init_cfg`` (a dict or a list of dicts). ``Pretrained`` entries are loaded here,
        with the official wrappers and key names understood (mmengine's own ``Pretrained`` init
        would silently load nothing from a ``{'model': ...}`` file); other entries go to
        ``external_initializer`` (mmengine's ``initialize`` when mm is installed)."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else [self.init_cfg]
        for cfg in cfgs:
            if cfg is None:
                continue
            cfg = dict(cfg)
            if cfg.get('type') != 'Pretrained':
                if self.external_initializer is None:
                    raise ValueError(f"{type(self).__name__}: init_cfg type {cfg.get('type')!r} needs "
                                     "mmengine; only 'Pretrained' is handled without it")
                self.external_initializer(self, cfg)
                continue
            cfg.pop('type')
            cfg.pop('map_location', None)
            path = cfg.pop('checkpoint', None)
            if not path:
                raise ValueError(f"{type(self).__name__}: init_cfg=dict(type='Pretrained') needs 'checkpoint'")
            report = self.load_pretrained(path, **cfg)
            logger.info('%s: %s', type(self).__name__, report.summary())
            self.init_report = report

    def load_pretrained(self, path: str, prefix: Optional[str] = None, checkpoint_key: Optional[str] = None,
                        strict: bool = True, trust: Optional[bool] = None) -> ckpt.LoadReport:
        """Load a released or self-trained checkpoint file; returns what was loaded and ignored.

        Accepts timm/DeiT/mmengine wrappers, ``module.`` prefixes and the official key names.
        A training-form file loaded into a ``deploy=True`` model (or the reverse) is an error that
        says how to convert; with ``strict`` any missing or unexpected backbone key is one too.
        """
        try:
            raw = ckpt.read_checkpoint(path, trust=trust)
        except ckpt.CheckpointNotFoundError as err:
            raise ckpt.CheckpointNotFoundError(
                f"{type(self).__name__}: pretrained checkpoint {path!r} not found. Download the "
                'release file (see the config comment or README, "Pretrained weights") and put it '
                "there, or point init_cfg['checkpoint'] at it (a URL works too).") from err
        state_dict, wrapper = ckpt.unwrap_state_dict(raw, checkpoint_key)
        state_dict = ckpt.strip_prefixes(state_dict, prefix)
        return self.load_backbone_state_dict(state_dict, source=str(path), wrapper_key=wrapper, strict=strict)

    def load_backbone_state_dict(self, state_dict: Dict[str, Tensor], source: str = '<state_dict>',
                                 wrapper_key: Optional[str] = None, strict: bool = True) -> ckpt.LoadReport:
        """Load a state dict in this family's key layout (train or deploy form, official or ours)."""
        state_dict = self._conform(dict(state_dict), source)
        report = ckpt.LoadReport(source=source, wrapper_key=wrapper_key)
        usable = ckpt.match_state_dict(self, state_dict, report, self.is_head_key, strict=strict)
        self.load_state_dict(usable, strict=False)
        return report

    def _conform(self, state_dict: Dict[str, Tensor], source: str) -> Dict[str, Tensor]:
        """Refuse a state dict of another family or of the other form (train vs deploy); convert
        official layouts."""
        foreign = ckpt.foreign_layout(state_dict)
        if foreign and not any(key in state_dict for key in self.state_dict()):
            raise ckpt.CheckpointError(f'{type(self).__name__}: {source} holds {foreign}.')
        form = self.state_dict_form(state_dict)
        mine = 'deploy' if self.deploy else 'train'
        if form != mine:
            hint = ('build the model with deploy=False, load, then fuse (rep_backbones.fuse or '
                    'switch_to_deploy), or convert the file with tools/fuse_checkpoint.py'
                    if form == 'train' else
                    'build the model with deploy=True to load a fused checkpoint; the training '
                    'branches cannot be recovered from it')
            raise ckpt.CheckpointError(
                f'{type(self).__name__}: {source} is a {form}-form checkpoint but the model is in '
                f'{mine} form (deploy={self.deploy}): {hint}')
        return self.convert_state_dict(state_dict, form)

    def _check_loaded_keys(self, state_dict, prefix, *args) -> None:
        """``load_state_dict`` pre-hook: same check and conversion for the keys under ``prefix``."""
        own = {k[len(prefix):]: state_dict[k] for k in list(state_dict) if k.startswith(prefix)}
        if not own:
            return
        converted = self._conform(dict(own), f'state dict for {prefix.rstrip(".") or "the model"}')
        if converted.keys() != own.keys() or any(converted[k] is not own[k] for k in own):
            for key in own:
                del state_dict[prefix + key]
            state_dict.update({prefix + k: v for k, v in converted.items()})
            gone, new = sorted(own.keys() - converted.keys()), sorted(converted.keys() - own.keys())
            logger.info('%s: converted the official key layout under %r: %d keys -> %d (%d renamed or merged away, '
                        'e.g. %s; %d new, e.g. %s; %d values folded)', type(self).__name__, prefix, len(own),
                        len(converted), len(gone), ckpt.abbreviate(gone, 2), len(new), ckpt.abbreviate(new, 2),
                        sum(converted[k] is not own[k] for k in converted.keys() & own.keys()))


def _checkpoint_segments(modules: Sequence[nn.Module]) -> List[nn.Module]:
    """What ``with_cp`` recomputes, one segment at a time: every block of the stage containers
    (nested ``nn.Sequential`` unrolled down to blocks), and each run of plain layers (conv, BN,
    activation) as one segment -- an in-place activation must share its segment with the layer that
    produced its input, or it would modify a saved checkpoint output."""
    def units(module: nn.Module) -> List[nn.Module]:
        if isinstance(module, nn.Sequential) and any(len(list(c.children())) for c in module):
            return [u for child in module for u in units(child)]
        return [module]

    segments, layers = [], []
    for unit in (u for m in modules for u in units(m)):
        if list(unit.children()):
            if layers:
                segments.append(nn.Sequential(*layers))
                layers = []
            segments.append(unit)
        else:
            layers.append(unit)
    if layers:
        segments.append(nn.Sequential(*layers))
    return segments


def arch_aliases(names: Iterable[str], prefixes: Sequence[str] = (), extra: Optional[Dict[str, str]] = None
                 ) -> Dict[str, str]:
    """Other spellings of each variant name (looked up case-insensitively): ``prefix + name`` for
    every prefix (``'repnext_'`` -> ``'repnext_m3'``), plus ``extra`` (e.g. timm's model names)."""
    aliases = {f'{prefix}{name}': name for name in names for prefix in prefixes}
    aliases.update(extra or {})
    return aliases


class _ReparamEntry(nn.Module):
    """Parameter-free child through which a child walk (timm's ``reparameterize_model``) reaches its
    owner's ``switch_to_deploy``. The owner is held outside ``_modules`` (no cycle in the module
    tree, nothing in the state dict; ``deepcopy`` maps it to the copied owner)."""

    def __init__(self, owner: nn.Module):
        super().__init__()
        object.__setattr__(self, '_owner_switch', owner.switch_to_deploy)

    def reparameterize(self) -> None:
        self._owner_switch()

    def forward(self, x: Tensor) -> Tensor:
        return x


def apply_norm_cfg(model: nn.Module, norm_cfg: dict) -> None:
    """Honour mm-style ``norm_cfg`` (BN or SyncBN; eps/momentum) on every BatchNorm."""
    cfg = dict(norm_cfg)
    kind = cfg.pop('type', 'BN')
    if kind not in ('BN', 'BN2d', 'SyncBN'):
        raise ValueError(f"norm_cfg type must be 'BN' or 'SyncBN', got {kind!r}")
    cfg.pop('requires_grad', None)
    for module in model.modules():
        if is_norm(module):
            for attr in ('eps', 'momentum'):
                if attr in cfg:
                    setattr(module, attr, cfg[attr])
    if kind == 'SyncBN':
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        assert converted is model  # the root is not a norm layer, so conversion is in place
