"""Generate the toy COCO instance-segmentation set (synthetic shapes on public-domain/CC0 photos).

    python detection/prepare_toy_coco.py                       # -> data/toy_coco (the main job's set)
    python detection/prepare_toy_coco.py --num-train 400 --size 320 384 --max-objects 6 --object-size 0.05 0.8

Deterministic (same arguments -> identical files) and idempotent (a stamp file makes reruns no-ops).
Layout is mmdet's CocoDataset default: annotations/instances_{train,val}2017.json, {train,val}2017/*.jpg.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from detection.toy_coco import TOY_COCO_CLASSES, make_toy_coco  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default='data/toy_coco', help='output directory (default: data/toy_coco)')
    parser.add_argument('--num-train', type=int, default=160, help='training images (default: 160)')
    parser.add_argument('--num-val', type=int, default=40, help='validation images (default: 40)')
    parser.add_argument('--size', type=int, nargs=2, default=(160, 192), metavar=('H', 'W'),
                        help='image height and width (default: 160 192)')
    parser.add_argument('--max-objects', type=int, default=3, help='max objects per image (default: 3)')
    parser.add_argument('--object-size', type=float, nargs=2, default=(0.25, 0.65), metavar=('MIN', 'MAX'),
                        help='object diameter range as fractions of the short side (default: 0.25 0.65)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    start = time.time()
    paths = make_toy_coco(args.root, num_train=args.num_train, num_val=args.num_val, image_size=tuple(args.size),
                          seed=args.seed, max_objects=args.max_objects, object_size=tuple(args.object_size))
    print(f'toy COCO ({", ".join(TOY_COCO_CLASSES)}) ready in {paths["root"]} ({time.time() - start:.1f} s)')
    for key in ('train_ann', 'val_ann', 'train_img_dir', 'val_img_dir'):
        print(f'  {key}: {paths[key]}')


if __name__ == '__main__':
    main()
