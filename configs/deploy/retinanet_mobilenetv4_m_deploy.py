# Deploy form of retinanet_mobilenetv4_m.py: the backbone is built fused (deploy=True). Test a fused checkpoint
# written by `tools/fuse_checkpoint.py configs/retinanet_mobilenetv4_m.py TRAINED.pth FUSED.pth` with it.
_base_ = ['../retinanet_mobilenetv4_m.py']
model = dict(backbone=dict(deploy=True, init_cfg=None))
