"""Latency, peak memory and training cost of the training, official fused and fused forms
(``tools/benchmark.py`` is the command line around this package).

Every measured thing is a *case*: a JSON-able dict that :func:`build_case` turns into a callable built
from ``torch.manual_seed(0)``, so the forms of one model share their weights. Cases of one table are timed
in interleaved rounds in one process; each case's peak memory is measured in a fresh subprocess.

* :mod:`~.settings` — what a run may measure (variants, forms, modes, formats, dtypes), the goals,
  :class:`Settings`;
* :mod:`~.cases` — the cases and :func:`build_case`;
* :mod:`~.memory` — :func:`peak_memory`, and the subprocess that measures it per case
  (``python -m rep_backbones.benchmark CASE_JSON``, :mod:`~.__main__`);
* :mod:`~.tables` — interleaved timing of a table, speed-ups, the family table's summary;
* :mod:`~.runs` — :func:`benchmark_backbones`, :func:`benchmark_models`, :func:`benchmark_training`.

The environment each result records is :func:`rep_backbones.deploy.report.environment`, the deploy report
card's.
"""
from .cases import Case, build_case, predict_batch
from .memory import measure_memory_in_subprocess, peak_memory
from .runs import OFFICIAL_TRAIN_PAIRS, benchmark_backbones, benchmark_models, benchmark_training, expand_backbone_specs
from .settings import (
    BACKBONE_VARIANTS,
    DTYPES,
    GOAL_VS_OFFICIAL,
    GOAL_VS_TRAIN,
    MEMORY_FORMATS,
    MODEL_FORMS,
    MODEL_MODES,
    Settings,
)
from .tables import backbone_summary

__all__ = ['BACKBONE_VARIANTS', 'DTYPES', 'GOAL_VS_OFFICIAL', 'GOAL_VS_TRAIN', 'MEMORY_FORMATS', 'MODEL_FORMS',
           'MODEL_MODES', 'OFFICIAL_TRAIN_PAIRS', 'Case', 'Settings', 'backbone_summary', 'benchmark_backbones',
           'benchmark_models', 'benchmark_training', 'build_case', 'expand_backbone_specs',
           'measure_memory_in_subprocess', 'peak_memory', 'predict_batch']
