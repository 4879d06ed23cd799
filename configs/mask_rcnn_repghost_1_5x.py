# Former name of repghostnet/mask-rcnn_repghostnet-1.5x_fpn_1x_coco.py, kept so that existing commands keep working.
_base_ = './repghostnet/mask-rcnn_repghostnet-1.5x_fpn_1x_coco.py'
