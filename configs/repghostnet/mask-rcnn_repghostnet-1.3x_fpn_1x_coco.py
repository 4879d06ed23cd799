# As mask-rcnn_repghostnet-1.0x_fpn_1x_coco.py, with RepGhostNet 1.3x.
_base_ = './mask-rcnn_repghostnet-1.0x_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        arch='1.3x',
        init_cfg=dict(checkpoint='https://github.com/ChengpengChen/RepGhost/releases/download/RepGhost/repghostnet_1_3x_231M_76.37.pth.tar')),
    neck=dict(in_channels=[32, 52, 144, 208]))
