# Former name of repghostnet/deploy/retinanet_repghostnet-1.5x_fpn_1x_coco_deploy.py, kept so that existing commands keep working.
_base_ = '../repghostnet/deploy/retinanet_repghostnet-1.5x_fpn_1x_coco_deploy.py'
