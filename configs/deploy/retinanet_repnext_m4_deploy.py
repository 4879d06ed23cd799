# Former name of repnext/deploy/retinanet_repnext-m4_fpn_1x_coco_deploy.py, kept so that existing commands keep working.
_base_ = '../repnext/deploy/retinanet_repnext-m4_fpn_1x_coco_deploy.py'
