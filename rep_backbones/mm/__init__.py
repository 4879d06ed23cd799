"""The thin OpenMMLab layer: hooks, safe checkpoint loading, CPU adaptations for the runner.

Imported by ``import rep_backbones`` when mmengine is installed; importing it calls
:func:`~rep_backbones.mm.integration.integrate`, the one place that changes mmengine's state
(registries, checkpoint loader, initializer, logger).
"""
from .hooks import RepFuseHook, SafeCheckpointHook
from .integration import integrate

integrate()

__all__ = ['RepFuseHook', 'SafeCheckpointHook', 'integrate']
