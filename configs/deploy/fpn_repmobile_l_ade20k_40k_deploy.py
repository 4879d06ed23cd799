# Deploy form of fpn_repmobile_l_ade20k_40k.py: the backbone is built fused (deploy=True). Test a fused checkpoint
# written by `tools/fuse_checkpoint.py configs/fpn_repmobile_l_ade20k_40k.py TRAINED.pth FUSED.pth` with it.
_base_ = ['../fpn_repmobile_l_ade20k_40k.py']
model = dict(backbone=dict(deploy=True, init_cfg=None))
