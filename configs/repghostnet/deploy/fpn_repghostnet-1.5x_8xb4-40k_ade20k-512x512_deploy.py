# Deploy form of fpn_repghostnet-1.5x_8xb4-40k_ade20k-512x512.py: the backbone is built fused (deploy=True).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/repghostnet/fpn_repghostnet-1.5x_8xb4-40k_ade20k-512x512.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../fpn_repghostnet-1.5x_8xb4-40k_ade20k-512x512.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
