# Deploy form of mask-rcnn_mobilenetv4-s_fpn_1x_coco.py: the backbone is built fused (deploy=True).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/mobilenetv4/mask-rcnn_mobilenetv4-s_fpn_1x_coco.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../mask-rcnn_mobilenetv4-s_fpn_1x_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
