"""The latency / memory benchmark behind ``tools/benchmark.py`` (:mod:`~rep_backbones.apis.benchmark`: backbones,
whole models and training steps; its timing loop is :mod:`rep_backbones.deploy.timing`).

Deployment (export, runtimes, INT8, report card) is :mod:`rep_backbones.deploy`; model building and atomic
writes are :mod:`rep_backbones.io`. Submodules are imported on use: this package imports nothing from mmdet /
mmseg by itself.
"""
