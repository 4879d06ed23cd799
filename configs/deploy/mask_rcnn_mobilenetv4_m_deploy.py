# Former name of mobilenetv4/deploy/mask-rcnn_mobilenetv4-m_fpn_1x_coco_deploy.py, kept so that existing commands keep working.
_base_ = '../mobilenetv4/deploy/mask-rcnn_mobilenetv4-m_fpn_1x_coco_deploy.py'
