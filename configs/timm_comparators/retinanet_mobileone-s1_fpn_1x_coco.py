# RetinaNet 1x COCO, backbone timm's mobileone_s1 (TimmRepBackbone): a comparator for the package's
# own families, trained with exactly the recipe of ../retinanet_repghost_1_3x.py (same data, schedule,
# optimizer, SyncBN backbone with trained statistics); only the backbone and the FPN in_channels differ.
# Backbone weights: timm's ImageNet release, HF hub repository timm/mobileone_s1.apple_in1k:
#   https://huggingface.co/timm/mobileone_s1.apple_in1k/resolve/main/model.safetensors
# saved under the path below (a missing file stops the run with a message naming it); loaded as
# released (timm key names, classifier keys reported as ignored). Fused for test / deploy by
# RepFuseHook (in the base config) or rep_backbones.fuse, as the package's own backbones.
_base_ = '../repghostnet/retinanet_repghostnet-1.3x_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmRepBackbone',
        model_name='mobileone_s1',
        out_indices=(0, 1, 2, 3),   # stages.0-3 (strides 4/8/16/32)
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=dict(type='SyncBN'),   # timm's converter (keeps timm's norm+act); BN on CPU
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/mobileone_s1.apple_in1k.safetensors')),
    neck=dict(in_channels=[96, 192, 512, 1280]))
