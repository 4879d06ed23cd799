# The 1x schedule of the official RepNeXt / RepMobile / RepViT Mask R-CNN runs: AdamW lr 2e-4 (batch 16),
# weight decay 0.05, 12 epochs, steps at 8 and 11, linear warmup 500 iterations from 1e-6 x lr
# (mmdet's default warmup starts at 1e-3 x lr).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
