# Semantic FPN, ADE20K 512x512, 40k iterations, 8 GPUs x 4 images, RepGhostNet 1.0x.
# Optimizer as the PoolFormer / RepViT Semantic FPN 40k runs: AdamW lr 2e-4, weight decay 1e-4, poly.
# RepGhostNet 1.0x backbone, ImageNet-pretrained (official release file, loaded as released:
# timm training dict, EMA weights). Save the release asset repghostnet_<width>_*.pth.tar under the name
# below (see README, "Pretrained weights");
# a missing file stops the run with a message naming the path.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_40k.py',
    './_base_/rep_runtime.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='RepGhostNet',
        arch='1.0x',
        out_indices=(0, 1, 2, 3),   # strides 4/8/16/32: blocks.2/4/6/8
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=dict(type='SyncBN'),   # the paper's setting; tools/train.py reverts to BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/repghostnet_1_0x.pth.tar')),
    neck=dict(in_channels=[24, 40, 112, 160]),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-6, begin=0, end=40000, by_epoch=False)]
