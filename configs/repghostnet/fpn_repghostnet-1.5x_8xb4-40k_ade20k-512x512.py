# As fpn_repghostnet-1.0x_8xb4-40k_ade20k-512x512.py, with RepGhostNet 1.5x.
_base_ = './fpn_repghostnet-1.0x_8xb4-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='1.5x',
        init_cfg=dict(checkpoint='https://github.com/ChengpengChen/RepGhost/releases/download/RepGhost/repghostnet_1_5x_301M_77.45.pth.tar')),
    neck=dict(in_channels=[36, 60, 168, 240]))
