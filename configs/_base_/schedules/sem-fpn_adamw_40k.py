# Semantic FPN 40k iterations at batch 32 (8 GPUs x 4 images), as the PoolFormer / RepViT / RepMobile
# Semantic FPN runs: AdamW lr 2e-4, weight decay 1e-4, poly (power 0.9) to 1e-6; evaluation and
# checkpoint every 4k iterations (mmseg's schedule_40k).
_base_ = 'mmseg::_base_/schedules/schedule_40k.py'
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-6, begin=0, end=40000, by_epoch=False)]
