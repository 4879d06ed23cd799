# As mask-rcnn_repghostnetv2-m_fpn_1x_coco.py, with MobileNetV4-M (conv): the same stages and
# feature channels (its depthwise convs sit in other blocks); timm's ImageNet weights
# mobilenetv4_conv_medium.e500_r256_in1k at the path below (see README.md).
_base_ = '../repghostnetv2/mask-rcnn_repghostnetv2-m_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        type='MobileNetV4',
        init_cfg=dict(checkpoint='pretrained/mobilenetv4_conv_medium.pth')))
