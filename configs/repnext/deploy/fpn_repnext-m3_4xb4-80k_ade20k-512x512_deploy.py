# Deploy form of fpn_repnext-m3_4xb4-80k_ade20k-512x512.py: the backbone is built fused (deploy=True, fusion level 1: no BatchNorm).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/repnext/fpn_repnext-m3_4xb4-80k_ade20k-512x512.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../fpn_repnext-m3_4xb4-80k_ade20k-512x512.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
