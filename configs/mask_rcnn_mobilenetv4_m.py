# Mask R-CNN 1x COCO (12 epochs, 8 GPUs x 2 images, SGD lr 0.02 as in mmdet), MobileNetV4-M.
# MobileNetV4-M (conv) backbone, ImageNet-pretrained: timm's mobilenetv4_conv_medium.e500_r256_in1k weights, loaded
# as they are (timm key layout). Save the hub file pytorch_model.bin (or
# torch.save(timm.create_model('mobilenetv4_conv_medium', pretrained=True).state_dict(), PATH))
# under the name below (see docs/families/repghostnetv2.md, "Pretrained weights");
# a missing file stops the run with a message naming the path.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', './_base_/rep_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV4',
        arch='M',
        out_indices=(0, 1, 2, 3),   # strides 4/8/16/32: blocks.0..3 (official layers[2,4,12,23])
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=dict(type='SyncBN'),   # tools/train.py reverts to BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/mobilenetv4_conv_medium.pth')),
    neck=dict(in_channels=[48, 80, 160, 256]))
