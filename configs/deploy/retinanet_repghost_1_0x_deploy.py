# Deploy form of retinanet_repghost_1_0x.py: the backbone is built fused (deploy=True). Test a fused checkpoint
# written by `tools/fuse_checkpoint.py configs/retinanet_repghost_1_0x.py TRAINED.pth FUSED.pth` with it.
_base_ = ['../retinanet_repghost_1_0x.py']
model = dict(backbone=dict(deploy=True, init_cfg=None))
