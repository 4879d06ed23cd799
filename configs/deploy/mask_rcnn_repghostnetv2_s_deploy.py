# Former name of repghostnetv2/deploy/mask-rcnn_repghostnetv2-s_fpn_1x_coco_deploy.py, kept so that existing commands keep working.
_base_ = '../repghostnetv2/deploy/mask-rcnn_repghostnetv2-s_fpn_1x_coco_deploy.py'
