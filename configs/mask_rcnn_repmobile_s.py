# Former name of repmobile/mask-rcnn_repmobile-s_fpn_1x_coco.py, kept so that existing commands keep working.
_base_ = './repmobile/mask-rcnn_repmobile-s_fpn_1x_coco.py'
