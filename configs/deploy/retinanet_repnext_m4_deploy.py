# Deploy form of retinanet_repnext_m4.py: the backbone is built fused (deploy=True, fusion level 1: no BatchNorm).
# Test a fused checkpoint written by `tools/fuse_checkpoint.py configs/retinanet_repnext_m4.py TRAINED.pth FUSED.pth`
# with it.
_base_ = ['../retinanet_repnext_m4.py']
model = dict(backbone=dict(deploy=True, init_cfg=None))
