# Semantic FPN on ADE20K (150 classes), 512x512 crops (mmseg's fpn_r50 model and ade20k data, 4 images
# per GPU), runtime and this package's hooks, without a schedule. A family config adds a schedule
# (schedules/*.py or mmseg's) and sets the backbone's type, arch, init_cfg and the FPN in_channels.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', './rep_runtime.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,   # mmseg hands model.pretrained (a ResNet URL in fpn_r50.py) to the backbone
    # Backbone settings shared by every family (see retinanet_fpn_coco.py).
    backbone=dict(_delete_=True, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                  norm_cfg=dict(type='SyncBN')),
    decode_head=dict(num_classes=150))
