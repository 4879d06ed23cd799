"""Generate the toy ADE20K-layout semantic-segmentation set (synthetic regions on public-domain/CC0 photos).

    python segmentation/prepare_toy_ade20k.py                  # -> data/toy_ade20k
    python segmentation/prepare_toy_ade20k.py --num-train 400 --size 320 384

The generator is :mod:`rep_backbones.toy_data` (also ``python -m rep_backbones.toy_data ade20k``).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from rep_backbones.toy_data.__main__ import main_ade20k  # noqa: E402

if __name__ == '__main__':
    main_ade20k()
