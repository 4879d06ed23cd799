# As fpn_repghostnetv2-l_8xb4-40k_ade20k-512x512.py, with MobileNetV4-L (conv): the same stages and
# feature channels (its depthwise convs sit in other blocks); timm's ImageNet weights
# mobilenetv4_conv_large.e600_r384_in1k at the path below (see README.md).
_base_ = '../repghostnetv2/fpn_repghostnetv2-l_8xb4-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        type='MobileNetV4',
        init_cfg=dict(checkpoint='pretrained/mobilenetv4_conv_large.pth')))
