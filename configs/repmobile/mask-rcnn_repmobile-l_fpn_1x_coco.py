# As mask-rcnn_repmobile-s_fpn_1x_coco.py, with RepMobile-L: the official setting
# (detection/configs/mask_rcnn_repmobile_large_fpn_1x_coco.py), which also puts SyncBN in the RoI
# bbox and mask heads. Paper (official run): 41.5 box AP / 37.9 mask AP.
_base_ = './mask-rcnn_repmobile-s_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='L', init_cfg=dict(checkpoint='pretrained/RepMobile_L.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]),
    roi_head=dict(
        bbox_head=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        mask_head=dict(norm_cfg=dict(type='SyncBN', requires_grad=True))))
