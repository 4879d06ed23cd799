# Deploy form of fpn_repghostnetv2-s_8xb4-40k_ade20k-512x512.py: the backbone is built fused (deploy=True).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/repghostnetv2/fpn_repghostnetv2-s_8xb4-40k_ade20k-512x512.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../fpn_repghostnetv2-s_8xb4-40k_ade20k-512x512.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
