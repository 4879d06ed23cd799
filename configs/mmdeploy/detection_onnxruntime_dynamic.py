# mmdeploy deploy config: mmdet object detection (RetinaNet, ...) -> one ONNX graph with box decoding and NMS,
# for onnxruntime. Input: the normalised, padded batch (what the model's data_preprocessor makes), any batch size
# and image size. Outputs: dets [N, num_dets, 5] (x1, y1, x2, y2, score in the resized image) and labels
# [N, num_dets]. mmdeploy's End2EndModel rescales to the original image.
# The model's test_cfg wins over post_processing for score_thr, nms.iou_threshold, nms_pre and max_per_img
# (mmdeploy's rewrite of BaseDenseHead.predict_by_feat); the values below are mmdeploy's defaults for the rest.
_base_ = ['./_base_/onnx_config.py']

onnx_config = dict(
    output_names=['dets', 'labels'],
    dynamic_axes=dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        dets={0: 'batch', 1: 'num_dets'},
        labels={0: 'batch', 1: 'num_dets'}))
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    post_processing=dict(
        score_threshold=0.05,
        confidence_threshold=0.005,
        iou_threshold=0.5,
        max_output_boxes_per_class=200,
        pre_top_k=5000,
        keep_top_k=100,
        background_label_id=-1))
