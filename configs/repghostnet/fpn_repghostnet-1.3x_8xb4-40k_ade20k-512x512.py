# As fpn_repghostnet-1.0x_8xb4-40k_ade20k-512x512.py, with RepGhostNet 1.3x.
_base_ = './fpn_repghostnet-1.0x_8xb4-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='1.3x',
        init_cfg=dict(checkpoint='https://github.com/ChengpengChen/RepGhost/releases/download/RepGhost/repghostnet_1_3x_231M_76.37.pth.tar')),
    neck=dict(in_channels=[32, 52, 144, 208]))
