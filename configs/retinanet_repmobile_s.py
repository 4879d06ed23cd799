# Former name of repmobile/retinanet_repmobile-s_fpn_1x_coco.py, kept so that existing commands keep working.
_base_ = './repmobile/retinanet_repmobile-s_fpn_1x_coco.py'
