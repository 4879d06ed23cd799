# Deploy form of retinanet_repghostnet-1.3x_fpn_1x_coco.py: the backbone is built fused (deploy=True).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/repghostnet/retinanet_repghostnet-1.3x_fpn_1x_coco.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../retinanet_repghostnet-1.3x_fpn_1x_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
