# RetinaNet 1x COCO (12 epochs, 8 GPUs x 2 images, SGD as in mmdet), MobileNetV4-L.
# MobileNetV4-L (conv) backbone, ImageNet-pretrained: timm's mobilenetv4_conv_large.e600_r384_in1k weights, loaded
# as they are (timm key layout). Save the hub file pytorch_model.bin (or
# torch.save(timm.create_model('mobilenetv4_conv_large', pretrained=True).state_dict(), PATH))
# under the name below (see docs/families/repghostnetv2.md, "Pretrained weights");
# a missing file stops the run with a message naming the path.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/rep_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV4',
        arch='L',
        out_indices=(0, 1, 2, 3),   # strides 4/8/16/32: blocks.0..3 (official layers[2,4,15,28])
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=dict(type='SyncBN'),   # tools/train.py reverts to BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/mobilenetv4_conv_large.pth')),
    neck=dict(in_channels=[48, 96, 192, 512]))
