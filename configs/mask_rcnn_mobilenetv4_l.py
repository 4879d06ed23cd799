# Former name of mobilenetv4/mask-rcnn_mobilenetv4-l_fpn_1x_coco.py, kept so that existing commands keep working.
_base_ = './mobilenetv4/mask-rcnn_mobilenetv4-l_fpn_1x_coco.py'
