# Former name of repmobile/deploy/retinanet_repmobile-s_fpn_1x_coco_deploy.py, kept so that existing commands keep working.
_base_ = '../repmobile/deploy/retinanet_repmobile-s_fpn_1x_coco_deploy.py'
