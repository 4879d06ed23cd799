# mmdeploy deploy config: mmdet instance segmentation (Mask R-CNN, ...) -> one ONNX graph (RPN, RoIAlign, box
# and mask heads, NMS) for onnxruntime. Outputs: dets [N, num_dets, 5], labels [N, num_dets] and masks
# [N, num_dets, 28, 28] (mask probabilities in each box; export_postprocess_mask=False: mmdeploy's End2EndModel
# pastes them into the image in Python, as mmdet does).
_base_ = ['./detection_onnxruntime_dynamic.py']

onnx_config = dict(
    output_names=['dets', 'labels', 'masks'],
    dynamic_axes=dict(masks={0: 'batch', 1: 'num_dets'}))
codebase_config = dict(post_processing=dict(export_postprocess_mask=False, score_threshold=0.0))
