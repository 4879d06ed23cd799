# mmdeploy IR settings shared by the deploy configs in this folder (mmdeploy's own keys; see docs/deploy.md).
# opset 11: mmdeploy 1.3.1's default, what its NMS / RoIAlign rewrites were written for and tested with.
# optimize=False: mmdeploy's graph optimiser is a C++ extension that its PyPI wheel does not ship (with
# True it only logs "Can not optimize model"); onnxruntime optimises the graph when it loads it anyway.
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=11,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    input_shape=None,
    optimize=False)
backend_config = dict(type='onnxruntime')
