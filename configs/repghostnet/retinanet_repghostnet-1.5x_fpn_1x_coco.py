# As retinanet_repghostnet-1.0x_fpn_1x_coco.py, with RepGhostNet 1.5x.
_base_ = './retinanet_repghostnet-1.0x_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        arch='1.5x',
        init_cfg=dict(checkpoint='https://github.com/ChengpengChen/RepGhost/releases/download/RepGhost/repghostnet_1_5x_301M_77.45.pth.tar')),
    neck=dict(in_channels=[36, 60, 168, 240]))
