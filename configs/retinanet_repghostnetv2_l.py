# Former name of repghostnetv2/retinanet_repghostnetv2-l_fpn_1x_coco.py, kept so that existing commands keep working.
_base_ = './repghostnetv2/retinanet_repghostnetv2-l_fpn_1x_coco.py'
