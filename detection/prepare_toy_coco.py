"""Generate the toy COCO instance-segmentation set (synthetic shapes on public-domain/CC0 photos).

    python detection/prepare_toy_coco.py                       # -> data/toy_coco (the main job's set)
    python detection/prepare_toy_coco.py --num-train 400 --size 320 384 --max-objects 6 --object-size 0.05 0.8

The generator is :mod:`rep_backbones.toy_data` (also ``python -m rep_backbones.toy_data coco``).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from rep_backbones.toy_data.__main__ import main_coco  # noqa: E402

if __name__ == '__main__':
    main_coco()
