# As fpn_repghostnetv2-s_8xb4-40k_ade20k-512x512.py, with RepGhostNetV2-L.
_base_ = './fpn_repghostnetv2-s_8xb4-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='L', init_cfg=dict(checkpoint='pretrained/repghostnetv2_l.pth')),
    neck=dict(in_channels=[48, 96, 192, 512]))
