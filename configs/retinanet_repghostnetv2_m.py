# RetinaNet 1x COCO (12 epochs, 8 GPUs x 2 images, SGD as in mmdet), RepGhostNetV2-M.
# RepGhostNetV2-M backbone, ImageNet-pretrained. The official repository has released no
# checkpoint yet: put one trained with it (official layers.* layout, converted on load) or with
# this package's RepGhostNetV2 classifier under the name below (see docs/families/repghostnetv2.md);
# a missing file stops the run with a message naming the path.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/rep_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='RepGhostNetV2',
        arch='M',
        out_indices=(0, 1, 2, 3),   # strides 4/8/16/32: blocks.0..3 (official layers[2,4,12,23])
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=dict(type='SyncBN'),   # tools/train.py reverts to BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/repghostnetv2_m.pth')),
    neck=dict(in_channels=[48, 80, 160, 256]))
