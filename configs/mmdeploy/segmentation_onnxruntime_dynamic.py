# mmdeploy deploy config: mmseg semantic segmentation (Semantic FPN, ...) -> one ONNX graph for onnxruntime.
# Output: the label map [N, 1, H, W] at the input resolution (with_argmax=True: logits resized and arg-maxed
# inside the graph).
_base_ = ['./_base_/onnx_config.py']

onnx_config = dict(
    dynamic_axes=dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        output={0: 'batch', 2: 'height', 3: 'width'}))
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=True)
