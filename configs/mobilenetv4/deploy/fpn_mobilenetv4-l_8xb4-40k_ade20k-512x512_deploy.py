# Deploy form of fpn_mobilenetv4-l_8xb4-40k_ade20k-512x512.py: the backbone is built fused (deploy=True).
# Test a checkpoint fused by `tools/fuse_checkpoint.py configs/mobilenetv4/fpn_mobilenetv4-l_8xb4-40k_ade20k-512x512.py TRAINED.pth FUSED.pth`
# with it.
_base_ = '../fpn_mobilenetv4-l_8xb4-40k_ade20k-512x512.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
