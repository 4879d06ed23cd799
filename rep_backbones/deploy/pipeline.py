"""From a config and a trained checkpoint to a deployed artifact and its report card (``tools/deploy.py``).

Steps: build the model (training form); fuse the whole model (re-parameterizable backbone, and every conv+BN
pair of necks and heads); export the part the backend runs (:func:`~.forms.export_part`) to fp32 ONNX;
quantize when asked (onnxruntime QDQ, or NNCF on OpenVINO, optionally with accuracy control); check the
deployed network against fused PyTorch (:func:`~.verify.parity`); score every form on the config's test set
with the config's own evaluator and time every form end to end, interleaved. Everything is written into a
temporary folder that replaces ``work_dir/<name>`` only when all steps passed: no partial artifact is left.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Optional

import torch

import rep_backbones
from rep_backbones.fusion import find_rep_backbones
from rep_backbones.io.atomic import atomic_directory
from rep_backbones.io.build import TensorModeWrapper, build_model_from_config

from . import data, forms, quantize
from .export import export_onnx
from .report import environment, write_card
from .runtimes import BACKENDS, Session
from .verify import parity

PRECISIONS = ('fp32', 'int8')


@dataclasses.dataclass
class DeployOptions:
    backend: str = 'onnxruntime'
    precision: str = 'fp32'
    max_drop: Optional[float] = None     # INT8: bound on the primary metric's drop (absolute, in [0, 1]);
                                         # auto: the selection's bound (default select.DEFAULT_MAX_DROP)
    calib_dir: Optional[str] = None      # default: the config's training images
    calib_n: int = 16
    eval_n: Optional[int] = None         # test images scored (all when None)
    rounds: int = 3                      # interleaved timing rounds over the timed images
    time_n: int = 4
    threads: int = 1
    fuse: bool = True                    # False: deploy the model as built (refused when it is not fused)
    progress: bool = True


def artifact_name(config: str, options: DeployOptions) -> str:
    return f'{os.path.splitext(os.path.basename(config))[0]}_{options.backend}_{options.precision}'


def calibration_set(model, options: DeployOptions):
    """Calibration inputs (float32 ``1 x 3 x H x W``): ``--calib-dir`` images, else the config's training images."""
    files = (data.list_images(options.calib_dir) if options.calib_dir
             else data.dataset_image_files(model, 'train'))
    return data.calibration_inputs(model, files[:options.calib_n])


def deploy(config: str, checkpoint: Optional[str], work_dir: str, options: DeployOptions,
           cfg_options: Optional[dict] = None) -> dict:
    """Deploy ``config`` + ``checkpoint`` into ``work_dir/<config>_<backend>_<precision>/`` (the network file:
    ``model.onnx``, or ``model.xml`` + ``model.bin`` for OpenVINO INT8; ``report.md``; ``report.json``);
    returns the card. ``auto`` backend and / or precision: :func:`~.select.deploy_auto` tries every candidate and
    keeps the fastest within the bound. Raises :class:`~.quantize.UnfusedModelError`, :class:`~.runtimes.BackendError`,
    :class:`~.data.CalibrationDataError` or :class:`~.quantize.AccuracyTargetError`, leaving nothing behind."""
    if options.backend not in BACKENDS + ('auto',):
        raise ValueError(f'unknown backend {options.backend!r}; choose from {BACKENDS + ("auto",)}')
    if options.precision not in PRECISIONS + ('auto',):
        raise ValueError(f'unknown precision {options.precision!r}; choose from {PRECISIONS + ("auto",)}')
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        if 'auto' in (options.backend, options.precision):
            from .select import deploy_auto
            return deploy_auto(config, checkpoint, work_dir, options, cfg_options)
        return _deploy(config, checkpoint, work_dir, options, cfg_options)
    finally:
        torch.set_num_threads(threads)


@dataclasses.dataclass
class Prepared:
    """A model ready to deploy: ``trained`` (training form), ``model`` (fused; INT8 layouts when ``int8``),
    ``network`` (the part the backend runs), the test set (``dataset``, ``batches``) and ``inputs`` (two
    preprocessed test images, float32 ``1 x 3 x H x W``: the export's example and the parity check's inputs)."""
    trained: torch.nn.Module
    model: torch.nn.Module
    network: torch.nn.Module
    layouts: list
    dataset: object
    batches: list
    inputs: list


def prepare(config: str, checkpoint: Optional[str], options: DeployOptions, cfg_options: Optional[dict],
            int8: bool) -> Prepared:
    """Build, fuse (whole model; each backbone in its family's INT8 layout when ``int8``), check it is fused."""
    trained = build_model_from_config(config, checkpoint, cfg_options=cfg_options).eval()
    model = copy.deepcopy(trained)
    if options.fuse:
        for _, backbone in find_rep_backbones(model):
            if int8 and not backbone.deploy:
                backbone.prepare_int8_fusion()
        rep_backbones.fuse(model, whole=True)
    quantize.assert_fused(model)
    layouts = [b.to_int8_layout() for _, b in find_rep_backbones(model)] if int8 else []
    network = TensorModeWrapper(model, forms.export_part(model)).eval()
    dataset, batches = data.evaluation_set(model, options.eval_n)
    inputs = [model.data_preprocessor(copy.copy(b), False)['inputs'].float().numpy() for b in batches[:2]]
    return Prepared(trained, model, network, layouts, dataset, batches, inputs)


def score_and_time(p: Prepared, deployed: dict, options: DeployOptions, card: dict) -> dict:
    """Score the training form, fused PyTorch and every ``deployed`` session (name -> Session) on the test set
    with the config's evaluator, time them all end to end, interleaved; fills ``card`` (``forms``: name ->
    metrics, primary metric, latency) and returns it."""
    model = p.model
    predictors = {f'training form ({data.task_scope(model)})': forms.pytorch_predictor(p.trained),
                  'fused PyTorch': forms.pytorch_predictor(model),
                  **{k: forms.backend_predictor(model, s) for k, s in deployed.items()}}
    metrics = forms.evaluate(model, predictors, p.dataset, p.batches, options.progress)
    files = [b['data_samples'][0].img_path for b in p.batches[:options.time_n]]
    timing = forms.latency(predictors, data.deploy_pipeline(model), files, options.rounds, options.progress)
    card['forms'] = {k: dict(metrics=metrics[k], primary=forms.primary_metric(model, metrics[k]),
                             latency=timing[k]) for k in predictors}
    card['metric_keys'] = [k for k in next(iter(metrics.values())) if k.split('/')[-1] in (
        'bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'segm_mAP', 'segm_mAP_50', 'segm_mAP_75', 'mIoU', 'mAcc', 'aAcc')]
    card.update(test_images=len(p.batches), timing=dict(rounds=options.rounds, images=len(files)))
    return card


def _deploy(config: str, checkpoint: Optional[str], work_dir: str, options: DeployOptions,
            cfg_options: Optional[dict]) -> dict:
    int8 = options.precision == 'int8'
    p = prepare(config, checkpoint, options, cfg_options, int8)
    with atomic_directory(os.path.join(work_dir, artifact_name(config, options))) as out:
        fp32_path = os.path.join(out, 'model.fp32.onnx')
        export_onnx(p.network, torch.from_numpy(p.inputs[0]), fp32_path)
        deployed = {'deployed fp32': Session(options.backend, fp32_path, options.threads)}
        card = dict(config=config, checkpoint=checkpoint, backend=options.backend, precision=options.precision,
                    stages=forms.BACKEND_STAGES[forms.kind(p.model)], int8_layouts=p.layouts, quantizer=None,
                    accuracy_control=None, environment=environment(options.threads))
        artifact = fp32_path
        if int8:
            artifact, deployed['deployed INT8'], card = quantize_int8(p.model, fp32_path, out, p.dataset, p.batches,
                                                                options, card)
        if artifact != fp32_path:
            os.unlink(fp32_path)
        else:
            os.replace(fp32_path, os.path.join(out, 'model.onnx'))
            artifact = os.path.join(out, 'model.onnx')
        card['artifact'] = os.path.basename(artifact)
        card['parity'] = [dataclasses.asdict(r) for r in parity(p.network, deployed[list(deployed)[-1]], p.inputs)]
        score_and_time(p, deployed, options, card)
        if int8 and options.max_drop is not None and options.backend == 'onnxruntime':
            drop = card['forms']['deployed fp32']['primary'] - card['forms']['deployed INT8']['primary']
            if drop > options.max_drop:
                raise quantize.AccuracyTargetError(
                    f'INT8 cannot meet --max-drop {options.max_drop}: onnxruntime\'s quantizer (no accuracy control) '
                    f'reached a drop of {drop:.4f} on the test set; --backend openvino runs NNCF\'s accuracy control',
                    drop)
        write_card(card, os.path.join(out, 'report.md'), os.path.join(out, 'report.json'))
    return card


def quantize_int8(model, fp32_path: str, out: str, dataset, batches, options: DeployOptions, card: dict,
              calibration=None):
    """``(artifact path, INT8 session, card)`` for the backend's quantizer (``calibration``: the inputs, computed
    from ``options`` when not given)."""
    calibration = calibration_set(model, options) if calibration is None else calibration
    if options.backend == 'onnxruntime':
        path = os.path.join(out, 'model.int8.onnx')
        quantize.quantize_onnx(fp32_path, path, calibration, progress=options.progress)
        card['quantizer'] = 'onnxruntime quantize_static (QDQ, per-channel int8 weights, uint8 activations)'
        return path, Session('onnxruntime', path, options.threads), card
    import openvino as ov
    if options.max_drop is None:
        int8 = quantize.nncf_quantize(fp32_path, calibration)
        card['quantizer'] = 'nncf.quantize (min-max, fast bias correction)'
    else:
        def validate(compiled, items) -> float:
            predictor = forms.backend_predictor(model, Session('openvino', compiled))
            return forms.primary_metric(model, forms.evaluate(model, {'m': predictor}, dataset, list(items))['m'])
        int8, card['accuracy_control'] = quantize.nncf_quantize_with_accuracy_control(
            fp32_path, calibration, batches, validate,
            lambda b: model.data_preprocessor(copy.copy(b), False)['inputs'].float().numpy(), options.max_drop)
        card['quantizer'] = 'nncf.quantize_with_accuracy_control (the config\'s evaluator, absolute max drop)'
    path = os.path.join(out, 'model.xml')
    ov.save_model(int8, path, compress_to_fp16=False)
    return path, Session('openvino', path, options.threads), card
