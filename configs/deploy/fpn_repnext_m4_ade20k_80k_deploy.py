# Deploy form of fpn_repnext_m4_ade20k_80k.py: the backbone is built fused (deploy=True, fusion level 1: no BatchNorm).
# Test a fused checkpoint written by `tools/fuse_checkpoint.py configs/fpn_repnext_m4_ade20k_80k.py TRAINED.pth FUSED.pth`
# with it.
_base_ = ['../fpn_repnext_m4_ade20k_80k.py']
model = dict(backbone=dict(deploy=True, init_cfg=None))
