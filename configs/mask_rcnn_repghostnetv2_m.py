# Former name of repghostnetv2/mask-rcnn_repghostnetv2-m_fpn_1x_coco.py, kept so that existing commands keep working.
_base_ = './repghostnetv2/mask-rcnn_repghostnetv2-m_fpn_1x_coco.py'
