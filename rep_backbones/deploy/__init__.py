"""Deployment of trained detectors and segmentors: fused, exported, optionally INT8, checked, timed.

* :mod:`~.pipeline` — config + checkpoint -> artifact + report card (``tools/deploy.py``);
* :mod:`~.select` — ``auto``: every (runtime, quantizer, precision) candidate, the fastest within the bound kept;
* :mod:`~.export` — ONNX export (TorchScript exporter), parity with PyTorch, operator counts;
* :mod:`~.runtimes` — onnxruntime and OpenVINO sessions behind one ``run(x)`` interface;
* :mod:`~.quantize` — INT8 through onnxruntime (QDQ) or NNCF (with accuracy control);
* :mod:`~.data` — calibration and test images through the config's own pipeline;
* :mod:`~.forms` — each form end to end (image in, predictions out), the config's evaluator, latency;
* :mod:`~.verify` / :mod:`~.report` — SQNR and parity; the report card (Markdown + JSON);
* :mod:`~.ranges` — per-tensor ranges and SQNR of a QDQ graph, worst first;
* :mod:`~.timing` — the one interleaved timing loop (also used by the benchmark and analysis tools);
* :mod:`~.fused_checkpoint` — training checkpoint -> checked fused checkpoint;
* :mod:`~.mmdeploy_compat` / :mod:`~.mmdeploy_verify` — mmdeploy 1.3.1's export on torch 2.14, and checking
  its graphs.

Submodules are imported on use: this package imports nothing from mmdet, mmseg, onnxruntime or OpenVINO by
itself.
"""
