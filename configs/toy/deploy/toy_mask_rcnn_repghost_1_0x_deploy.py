# Deploy form of configs/toy/toy_mask_rcnn_repghost_1_0x.py: the backbone is built fused (deploy=True), for the
# checkpoint written by `tools/fuse_checkpoint.py configs/toy/toy_mask_rcnn_repghost_1_0x.py TRAINED.pth FUSED.pth`.
_base_ = ['../toy_mask_rcnn_repghost_1_0x.py']
model = dict(backbone=dict(deploy=True))
