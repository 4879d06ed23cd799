# Former name of mobilenetv4/retinanet_mobilenetv4-s_fpn_1x_coco.py, kept so that existing commands keep working.
_base_ = './mobilenetv4/retinanet_mobilenetv4-s_fpn_1x_coco.py'
