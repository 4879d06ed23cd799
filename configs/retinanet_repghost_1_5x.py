# Former name of repghostnet/retinanet_repghostnet-1.5x_fpn_1x_coco.py, kept so that existing commands keep working.
_base_ = './repghostnet/retinanet_repghostnet-1.5x_fpn_1x_coco.py'
