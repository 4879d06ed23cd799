"""onnxruntime and OpenVINO behind one small interface: ``Session.run(x) -> [outputs]``.

Both run on the CPU with a fixed number of intra-op threads and without spin-waiting: spinning threads keep
the cores busy after a call and, on a 2-core machine, slowed PyTorch calls timed right after them up to
~30x (the benchmark and the report card interleave runtimes with PyTorch).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from rep_backbones.io.atomic import PathLike

BACKENDS = ('onnxruntime', 'openvino')


class BackendError(RuntimeError):
    """The backend cannot read or compile the graph it was given."""


def ort_session(path: PathLike, threads: Optional[int] = None):
    """onnxruntime CPU ``InferenceSession`` for ``path``; ``threads`` sets the intra-op threads (inter-op: 1)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=['CPUExecutionProvider'])


def openvino_compiled(model, threads: Optional[int] = None):
    """OpenVINO ``CompiledModel`` on the CPU for ``model`` (an ``openvino.Model`` or an ONNX / IR path),
    latency hint (one stream), ``threads`` inference threads."""
    import openvino as ov
    config = {'PERFORMANCE_HINT': 'LATENCY'}
    if threads:
        config['INFERENCE_NUM_THREADS'] = int(threads)
    core = ov.Core()
    return core.compile_model(model if isinstance(model, ov.Model) else str(model), 'CPU', config)


class Session:
    """One network on one backend. ``run(x)``: ``x`` float32 ``N x 3 x H x W`` -> the graph's outputs as
    numpy arrays, in the graph's output order."""

    def __init__(self, backend: str, model, threads: Optional[int] = None):
        if backend not in BACKENDS:
            raise ValueError(f'unknown backend {backend!r}; choose from {BACKENDS}')
        self.backend = backend
        try:
            if backend == 'onnxruntime':
                self._impl = ort_session(model, threads)
                self.input_name = self._impl.get_inputs()[0].name
                self.output_names = [o.get_any_name() if hasattr(o, 'get_any_name') else o.name
                                     for o in self._impl.get_outputs()]
            else:
                self._impl = model if hasattr(model, 'create_infer_request') else openvino_compiled(model, threads)
                self._request = self._impl.create_infer_request()
                self.input_name = self._impl.inputs[0].get_any_name()
                self.output_names = [o.get_any_name() for o in self._impl.outputs]
        except Exception as err:       # each runtime raises its own types for an unreadable graph
            detail = ' '.join(str(err).split())[-400:]
            raise BackendError(f'{backend} cannot take the graph {model}: {type(err).__name__}: {detail}') from err

    def run(self, x: np.ndarray) -> List[np.ndarray]:
        if self.backend == 'onnxruntime':
            return self._impl.run(None, {self.input_name: x})
        result = self._request.infer({0: x})
        return [np.asarray(result[out]) for out in self._impl.outputs]
