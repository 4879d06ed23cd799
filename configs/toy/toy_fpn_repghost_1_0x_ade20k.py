# Toy run of fpn_repghost_1_0x_ade20k_40k.py on the generated toy ADE20K set (rep_backbones/toy_data;
# `python segmentation/prepare_toy_ade20k.py`): same model, with only the data root, image size and
# schedule changed -- plus no ImageNet weights (not shipped), BN instead of SyncBN for CPU, and the
# toy runs' reproducibility (one seed, deterministic algorithms, data read in the training process).
_base_ = ['../repghostnet/fpn_repghostnet-1.0x_8xb4-40k_ade20k-512x512.py']

data_root = 'data/toy_ade20k'
crop_size = (256, 256)
img_scale = (320, 256)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None, norm_cfg=dict(type='BN')),
    decode_head=dict(norm_cfg=norm_cfg))

max_iters = 400
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-6, begin=0, end=max_iters, by_epoch=False)]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(by_epoch=False, interval=max_iters))
randomness = dict(seed=0, deterministic=True)
