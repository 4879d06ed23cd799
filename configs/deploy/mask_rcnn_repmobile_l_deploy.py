# Deploy form of mask_rcnn_repmobile_l.py: the backbone is built fused (deploy=True). Test a fused checkpoint
# written by `tools/fuse_checkpoint.py configs/mask_rcnn_repmobile_l.py TRAINED.pth FUSED.pth` with it.
_base_ = ['../mask_rcnn_repmobile_l.py']
model = dict(backbone=dict(deploy=True, init_cfg=None))
