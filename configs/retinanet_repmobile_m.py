# RetinaNet 1x COCO (12 epochs, 8 GPUs x 2 images, SGD as in mmdet), RepMobile-M (no upstream RetinaNet
# config: the mmdet recipe, as for the other families; backbone BN as upstream's detection code, SyncBN).
# RepMobile-M backbone, ImageNet-pretrained: the official release file (DeiT-style {'model': ...}, classifier and
# distillation-head keys ignored and reported), loaded as released. Save it under the name below (see
# docs/families/repmobile.md, "Official weights"); a missing file stops the run with a message naming the path.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/rep_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='RepMobile',
        arch='M',
        out_indices=(0, 1, 2, 3),   # strides 4/8/16/32: layer0..3
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=dict(type='SyncBN'),   # as upstream's detection code; tools/train.py reverts to BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/RepMobile_M.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))
