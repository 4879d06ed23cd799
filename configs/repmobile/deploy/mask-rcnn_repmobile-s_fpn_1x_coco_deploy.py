# Deploy form of mask-rcnn_repmobile-s_fpn_1x_coco.py: the backbone is built fused (deploy=True).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/repmobile/mask-rcnn_repmobile-s_fpn_1x_coco.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../mask-rcnn_repmobile-s_fpn_1x_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
