# As fpn_repghostnetv2-s_8xb4-40k_ade20k-512x512.py, with RepGhostNetV2-M.
_base_ = './fpn_repghostnetv2-s_8xb4-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='M', init_cfg=dict(checkpoint='pretrained/repghostnetv2_m.pth')),
    neck=dict(in_channels=[48, 80, 160, 256]))
