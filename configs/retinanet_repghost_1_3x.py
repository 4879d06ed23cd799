# RetinaNet 1x COCO (12 epochs, 8 GPUs x 2 images, SGD as in mmdet), RepGhostNet 1.3x.
# RepGhostNet 1.3x backbone, ImageNet-pretrained (official release file, loaded as released:
# timm training dict, EMA weights). Save the release asset repghostnet_<width>_*.pth.tar under the name
# below (see README, "Pretrained weights");
# a missing file stops the run with a message naming the path.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/rep_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='RepGhostNet',
        arch='1.3x',
        out_indices=(0, 1, 2, 3),   # strides 4/8/16/32: blocks.2/4/6/8
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=dict(type='SyncBN'),   # the paper's setting; tools/train.py reverts to BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/repghostnet_1_3x.pth.tar')),
    neck=dict(in_channels=[32, 52, 144, 208]))
