# The toy COCO set of rep_backbones/toy_data (`python detection/prepare_toy_coco.py` -> data/toy_coco),
# shared by every toy detection config, plus the settings that make toy runs reproducible.
#
# mmengine refuses a key inherited from two bases, and the toy configs also inherit their full-size
# config (which has COCO's dataloaders), so the data settings are named toy_* here and each toy config
# assigns them: `train_dataloader = _base_.toy_train_dataloader` (merged into mmdet's COCO settings).
toy_data_root = 'data/toy_coco/'
# the generator's classes and drawing colours (tests/test_toy_data.py checks they agree)
toy_metainfo = dict(classes=('circle', 'square', 'triangle', 'star'),
                    palette=[(225, 30, 40), (30, 80, 235), (25, 185, 60), (250, 205, 20)])
toy_img_scale = (192, 160)   # (W, H): the generator's image size, so Resize keeps the images as drawn
# masks are loaded for every toy detector (Mask R-CNN trains on them, RetinaNet ignores them), so
# that one pipeline serves both
toy_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=toy_img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
toy_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=toy_img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),   # ground truth for the demo's picture
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# num_workers=0: data are read in the training process. On the 2-core CPU machine a worker process only
# competes with the model for the cores; and the sampler (seeded, see randomness) and the pipeline's
# random flips (numpy's global generator, seeded) then give the same batches in every run.
toy_train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=toy_data_root, metainfo=toy_metainfo, ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), pipeline=toy_train_pipeline))
toy_val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=toy_data_root, metainfo=toy_metainfo, ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), pipeline=toy_test_pipeline))
toy_val_evaluator = dict(ann_file=toy_data_root + 'annotations/instances_val2017.json')

# Same seed and deterministic algorithms (torch.use_deterministic_algorithms): two runs on one machine
# give bit-equal weights. Training is iteration-based (IterBasedTrainLoop, set in each toy config) so
# that a run resumed from a mid-epoch checkpoint skips exactly the batches already trained on
# (EpochBasedTrainLoop would repeat the interrupted epoch from its start).
randomness = dict(seed=0, deterministic=True)
