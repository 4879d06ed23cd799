"""The classifier forms as timm models: ``timm.create_model('repnext_m3')`` after ``import rep_backbones``.

Registered: every variant of the families timm does not have — ``repghostnetv2_{s,m,l}``,
``repnext_m{0..5}``, ``repnext_m{0,1,2}e``, ``repmobile_{s,m,l}``. timm's own ``repghostnet_*`` and
``mobilenetv4_conv_*`` are left alone (the mm backbones accept those names as ``arch``).

Each ``pretrained_cfg`` names the official release file (``url`` where the release has a direct link,
``file_name``, the EMA / wrapper key the file keeps its weights under, mean/std, input size; the file
name and wrapper key are in ``notes``; ``first_conv`` and ``classifier`` name the training form's stem
conv and final layer(s), ``pool_size`` the final map at ``input_size``), so
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))`` loads a
downloaded copy: the file is unwrapped and converted with the package's own loader (official key
layouts included). ``features_only=True`` returns the same maps as the mm backbone (the deepest block
at strides 4/8/16/32), and ``timm.utils.model.reparameterize_model`` fuses (the package's protocol).
"""
from __future__ import annotations

from typing import Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from . import checkpoint as ckpt
from .models import CLASSIFIERS


def _cfg(first_conv: str, classifier, file_name: str = '', url: str = '', input_size: int = 224, key: str = '',
         origin: str = '', license: str = '') -> dict:
    """timm ``PretrainedCfg`` fields; the release file's name and wrapper key go in ``notes``. timm's
    loader adapts ``first_conv`` to ``in_chans`` and drops ``classifier`` for another ``num_classes``."""
    notes = (f'release file: {file_name}', f"weights under the {key!r} key (EMA: none released)") if file_name else ()
    return dict(url=url or None, num_classes=1000, input_size=(3, input_size, input_size),
                pool_size=(input_size // 32, input_size // 32), crop_pct=0.875, interpolation='bicubic',
                mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv=first_conv, classifier=classifier,
                origin_url=origin, license=license, notes=notes)


# name -> (classifier class, arch, pretrained_cfg): every variant of each classifier with a ``timm_prefix``
# (the families timm does not have)
MODELS: Dict[str, tuple] = {
    f'{cls.timm_prefix}_{arch.lower()}': (cls, arch, _cfg(**cls.timm_release(arch)))
    for cls in CLASSIFIERS.values() if cls.timm_prefix for arch in cls.arch_settings}
default_cfgs = generate_default_cfgs({name: cfg for name, (_, _, cfg) in MODELS.items()})


def _load_filter(state_dict, model):
    """timm hands over what its loader found (EMA weights preferred): unwrap once more if the file
    nests it, then the package's form check and official-layout conversion (``_conform``)."""
    state_dict, _ = ckpt.unwrap_state_dict(state_dict)
    return model._conform(ckpt.strip_prefixes(state_dict), 'pretrained file')


def _create(name: str, pretrained: bool = False, **kwargs):
    cls, arch, _ = MODELS[name]

    def build(in_chans: int = 3, **model_kwargs):     # timm's argument names -> the classifier's
        return cls(arch=arch, in_channels=in_chans, **{**cls.timm_defaults, **model_kwargs})

    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_model_with_cfg(build, name, pretrained, pretrained_filter_fn=_load_filter,
                                feature_cfg=dict(flatten_sequential=cls.timm_flatten_sequential,
                                                 out_indices=out_indices), **kwargs)


def _register(name: str) -> None:
    def entry(pretrained: bool = False, **kwargs):
        return _create(name, pretrained, **kwargs)
    entry.__name__ = name
    entry.__doc__ = f'{MODELS[name][0].__name__}(arch={MODELS[name][1]!r}) as a timm model.'
    entry.__module__ = __name__
    register_model(entry)


for _name in MODELS:
    _register(_name)
