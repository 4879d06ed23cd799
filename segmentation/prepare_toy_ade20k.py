"""Generate the toy ADE20K-layout semantic-segmentation set (synthetic regions on public-domain/CC0 photos).

    python segmentation/prepare_toy_ade20k.py                  # -> data/toy_ade20k
    python segmentation/prepare_toy_ade20k.py --num-train 400 --size 320 384

Deterministic (same arguments -> identical files) and idempotent (a stamp file makes reruns no-ops).
Layout is mmseg's ADE20KDataset default: images/{training,validation}/*.jpg,
annotations/{training,validation}/*.png (ADE20K label values, 0 = other/ignored).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from segmentation.toy_ade20k import TOY_ADE_LABELS, make_toy_ade20k  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default='data/toy_ade20k', help='output directory (default: data/toy_ade20k)')
    parser.add_argument('--num-train', type=int, default=160, help='training images (default: 160)')
    parser.add_argument('--num-val', type=int, default=40, help='validation images (default: 40)')
    parser.add_argument('--size', type=int, nargs=2, default=(256, 320), metavar=('H', 'W'),
                        help='image height and width (default: 256 320)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    start = time.time()
    paths = make_toy_ade20k(args.root, num_train=args.num_train, num_val=args.num_val,
                            image_size=tuple(args.size), seed=args.seed)
    labels = ', '.join(f'{name}={value}' for name, value in TOY_ADE_LABELS.items())
    print(f'toy ADE20K ready in {paths["root"]} ({time.time() - start:.1f} s); label values: {labels}')
    for key in ('train_img_dir', 'train_ann_dir', 'val_img_dir', 'val_ann_dir'):
        print(f'  {key}: {paths[key]}')


if __name__ == '__main__':
    main()
