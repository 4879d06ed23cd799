"""Name -> class tables of the pure-PyTorch models (the mm integration registers from these)."""
from __future__ import annotations

import inspect
from typing import Callable, Dict, List, Optional, Sequence, Type

from torch import nn

BACKBONES: Dict[str, Type[nn.Module]] = {}
CLASSIFIERS: Dict[str, Type[nn.Module]] = {}


def register_backbone(cls: Type[nn.Module]) -> Type[nn.Module]:
    """Class decorator: make ``cls`` buildable by its class name (``type='RepGhostNet'`` in mm)."""
    BACKBONES[cls.__name__] = cls
    return cls


def register_classifier(family: str) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    """Class decorator: the ImageNet classifier form of backbone ``family``."""
    def wrap(cls: Type[nn.Module]) -> Type[nn.Module]:
        CLASSIFIERS[family] = cls
        return cls
    return wrap


def build_backbone(name: str, **kwargs) -> nn.Module:
    if name not in BACKBONES:
        raise KeyError(f'unknown backbone {name!r}; available: {", ".join(sorted(BACKBONES))}')
    return BACKBONES[name](**kwargs)


def build_classifier(family: str, **kwargs) -> nn.Module:
    if family not in CLASSIFIERS:
        raise KeyError(f'no classifier form for {family!r}; available: {", ".join(sorted(CLASSIFIERS))}')
    return CLASSIFIERS[family](**kwargs)


def default_arch(cls: Type[nn.Module]) -> Optional[str]:
    """The variant a class builds by default (its ``arch=`` default, else its first variant)."""
    param = inspect.signature(cls.__init__).parameters.get('arch')
    if param is not None and isinstance(param.default, str):
        return param.default
    settings = getattr(cls, 'arch_settings', None)
    return next(iter(settings)) if settings else None


def family_specs(families: Optional[Sequence[str]] = None) -> List[str]:
    """``'Family:variant'`` of the variants each backbone family names as representative
    (``representative_archs``: the ones the family tables and benchmarks measure), in registry order."""
    names = list(BACKBONES) if families is None else list(families)
    return [f'{name}:{arch}' for name in names for arch in getattr(BACKBONES[name], 'representative_archs', ())]
