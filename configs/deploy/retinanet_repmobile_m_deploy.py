# Deploy form of retinanet_repmobile_m.py: the backbone is built fused (deploy=True). Test a fused checkpoint
# written by `tools/fuse_checkpoint.py configs/retinanet_repmobile_m.py TRAINED.pth FUSED.pth` with it.
_base_ = ['../retinanet_repmobile_m.py']
model = dict(backbone=dict(deploy=True, init_cfg=None))
