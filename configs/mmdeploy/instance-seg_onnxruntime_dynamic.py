# mmdeploy deploy config: mmdet instance segmentation (Mask R-CNN, ...) -> one ONNX graph (RPN, RoIAlign, box
# and mask heads, NMS) for onnxruntime. Outputs: dets [N, num_dets, 5], labels [N, num_dets] and masks
# [N, num_dets, 28, 28] (mask probabilities in each box; export_postprocess_mask=False: mmdeploy's End2EndModel
# pastes them into the image in Python, as mmdet does).
# opset 16: ONNX RoiAlign has coordinate_transformation_mode='half_pixel' (mmcv's aligned=True) from opset 16 on.
# mmdeploy's opset-11 form (RoIs shifted by half a feature pixel) gave up to 0.32 absolute difference from
# mmcv's roi_align on random features in onnxruntime 1.32; opset 16 gave 0 (docs/deploy.md).
# score_threshold=0.0: mmdeploy applies post_processing.score_threshold to the RPN proposals, which mmdet does
# not threshold; the detections' threshold is the model's test_cfg.rcnn.score_thr.
# The graph is exact, but mmdeploy 1.3.1 post-processes two-stage detectors its own way (every class of a RoI gets
# the top class's box; one RPN NMS over all levels): it differs from plain mmdet (docs/deploy.md, 'Mask R-CNN').
_base_ = ['./detection_onnxruntime_dynamic.py']

onnx_config = dict(
    opset_version=16,
    output_names=['dets', 'labels', 'masks'],
    dynamic_axes=dict(masks={0: 'batch', 1: 'num_dets'}))
codebase_config = dict(post_processing=dict(export_postprocess_mask=False, score_threshold=0.0))
