# Deploy form of retinanet_repnext-m3_fpn_1x_coco.py: the backbone is built fused (deploy=True, fusion level 1: no BatchNorm).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/repnext/retinanet_repnext-m3_fpn_1x_coco.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../retinanet_repnext-m3_fpn_1x_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
