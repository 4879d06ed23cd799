# Former name of repnext/mask-rcnn_repnext-m4_fpn_1x_coco.py, kept so that existing commands keep working.
_base_ = './repnext/mask-rcnn_repnext-m4_fpn_1x_coco.py'
