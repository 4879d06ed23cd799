# Deploy form of retinanet_repghostnetv2-m_fpn_1x_coco.py: the backbone is built fused (deploy=True).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/repghostnetv2/retinanet_repghostnetv2-m_fpn_1x_coco.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../retinanet_repghostnetv2-m_fpn_1x_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
