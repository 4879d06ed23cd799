# Deploy form of retinanet_repmobile-l_fpn_1x_coco.py: the backbone is built fused (deploy=True).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/repmobile/retinanet_repmobile-l_fpn_1x_coco.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../retinanet_repmobile-l_fpn_1x_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
