# Semantic FPN, ADE20K 512x512, RepNeXt-M3: the official setting
# (segmentation/configs/sem_fpn/fpn_repnext_m3_ade20k_40k.py). Its name says 40k, but it runs 80,000
# iterations at 4 GPUs x 4 images = batch 16 (the samples of 40k iterations at batch 32); shipped as
# run: train with 4 GPUs, or keep the total batch at 16. AdamW lr 1e-4, weight decay 0.05, poly
# (power 0.9) to 1e-6; evaluation and checkpoint every 8k (mmseg's schedule_80k); SyncBN backbone.
# Paper (official run): 40.6 mIoU.
# The backbone starts from the official ImageNet weights (GitHub release v1.0 of suous/RepNeXt,
# DeiT-style {'model': ...} training-form dict; the distillation head keys are reported as ignored).
_base_ = ['../_base_/sem-fpn_ade20k-512x512.py', 'mmseg::_base_/schedules/schedule_80k.py']
model = dict(
    backbone=dict(
        type='RepNeXt',
        arch='M3',                  # out_indices 0..3 = stages.0..3
        drop_path_rate=0.0,         # official det/seg runs: no stochastic depth
        # Official: nothing frozen, BN statistics trained (its BN freeze was a no-op on SyncBN).
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/suous/RepNeXt/releases/download/v1.0/repnext_m3_distill_300e.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
train_dataloader = dict(batch_size=4)   # x 4 GPUs = 16
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=None)
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-6, begin=0, end=80000, by_epoch=False)]
