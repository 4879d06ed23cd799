# mmdet's RetinaNet 1x schedule: SGD lr 0.01 (batch 16), momentum 0.9, weight decay 1e-4, 12 epochs,
# steps at 8 and 11, linear warmup 500 iterations from 1e-3 x lr (retinanet_r50_fpn_1x_coco.py).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
