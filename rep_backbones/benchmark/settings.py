"""What a benchmark run may measure (variants, forms, modes, formats, dtypes), its goals, and the
:class:`Settings` every case of a run shares."""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

import torch

BACKBONE_VARIANTS = ('train', 'official', 'fused', 'ort')
MODEL_FORMS = ('train', 'fused', 'fused_whole', 'ort')
MODEL_MODES = ('tensor', 'predict')
MEMORY_FORMATS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
# The goals of the family table: fused <= 0.85x the official fused form's time (families
# with an official converter), else fused >= 1.5x faster than the own training form.
GOAL_VS_OFFICIAL = 0.85
GOAL_VS_TRAIN = 1.5


def check_variants(variants) -> None:
    """Refuse a backbone variant that is not in :data:`BACKBONE_VARIANTS`, naming the ones that are
    (the old name ``'upstream'`` is pointed to ``'official'``)."""
    for v in variants:
        if v == 'upstream':
            raise ValueError("variant 'upstream' is now called 'official' (the official converter's fused form)")
        if v not in BACKBONE_VARIANTS:
            raise ValueError(f'unknown variant {v!r}; expected one of {", ".join(BACKBONE_VARIANTS)}')


@dataclass
class Settings:
    """What every case of a run shares. ``compile_mode``: ``torch.compile`` mode for the extra
    ``fused_compiled`` variant (None: not measured)."""
    shape: Tuple[int, int] = (512, 512)
    batch: int = 1
    threads: int = 2
    device: str = 'cpu'
    dtype: str = 'float32'
    warmup: int = 3
    rounds: int = 5
    iters: int = 2
    compile_mode: Optional[str] = None
    workdir: str = field(default_factory=tempfile.gettempdir)

    def __post_init__(self):
        self.shape = tuple(self.shape)
        if self.dtype not in DTYPES:
            raise ValueError(f'dtype must be one of {", ".join(DTYPES)}, got {self.dtype!r}')
        if self.device.startswith('cuda') and not torch.cuda.is_available():
            raise ValueError(f'device {self.device!r}: no CUDA device available')
        if self.dtype != 'float32' and not self.device.startswith('cuda'):
            raise ValueError(f'dtype {self.dtype} is meant for CUDA; on CPU measure float32')
        for name in ('batch', 'threads', 'rounds', 'iters'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')

    def public(self) -> dict:
        """The settings as recorded in the JSON (without the temporary work directory)."""
        return {k: v for k, v in asdict(self).items() if k != 'workdir'}
