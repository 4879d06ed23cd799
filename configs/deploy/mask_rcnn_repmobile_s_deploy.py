# Former name of repmobile/deploy/mask-rcnn_repmobile-s_fpn_1x_coco_deploy.py, kept so that existing commands keep working.
_base_ = '../repmobile/deploy/mask-rcnn_repmobile-s_fpn_1x_coco_deploy.py'
