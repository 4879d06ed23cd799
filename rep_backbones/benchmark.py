"""Latency, peak memory and training cost of the training, upstream-style fused and fused forms
(``tools/benchmark.py`` is the command line around this module).

Every measured thing is a *case*: a JSON-able dict that :func:`build_case` turns into a callable
(one forward, or one training step) built from scratch with ``torch.manual_seed(0)``, so the forms
of one model share their weights. Cases of one table are timed in **interleaved rounds** in one
process (each round runs every case ``iters`` times in turn, so load changes on a shared machine
hit all forms alike), after ``warmup`` calls each; medians and p90 are reported.

Peak memory of a case is measured in a **fresh subprocess** (``python -m
rep_backbones.benchmark CASE_JSON``), so allocator caches of other cases do not hide it:

* CPU: peak resident set size during the timed calls minus the resident size just before them.
  The kernel's high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` first, so the
  memory used while building / fusing / exporting does not mask the inference peak. Where that
  file is not writable the ``resource.getrusage`` ``ru_maxrss`` delta is used (then 0 means "no
  higher than the build's peak"); the JSON says which (``memory_method``). The subprocess runs with
  glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` / ``MALLOC_TRIM_THRESHOLD_=0``, so freed tensors leave the
  resident set (otherwise the warm-up call's freed memory is reused unseen). ``resident_mib`` is the
  whole process (Python, torch and its libraries included), ``peak_mib`` the part the calls add.
* CUDA: ``torch.cuda.max_memory_allocated`` during the calls minus ``memory_allocated`` before.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

import rep_backbones
from rep_backbones.deploy.timing import interleaved, summarize
from rep_backbones.fusion import NoOfficialForm, official_fused

BACKBONE_VARIANTS = ('train', 'upstream', 'fused', 'ort')
MODEL_FORMS = ('train', 'fused', 'fused_whole', 'ort')
MODEL_MODES = ('tensor', 'predict')
MEMORY_FORMATS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
# The goals of the family table: fused <= 0.85x the upstream fused form's time (families
# with an official converter), else fused >= 1.5x faster than the own training form.
GOAL_VS_UPSTREAM = 0.85
GOAL_VS_TRAIN = 1.5


@dataclass
class Settings:
    """What every case of a run shares. ``compile_mode``: ``torch.compile`` mode for the extra
    ``fused_compiled`` variant (None: not measured)."""
    shape: Tuple[int, int] = (512, 512)
    batch: int = 1
    threads: int = 2
    device: str = 'cpu'
    dtype: str = 'float32'
    warmup: int = 3
    rounds: int = 5
    iters: int = 2
    compile_mode: Optional[str] = None
    workdir: str = field(default_factory=tempfile.gettempdir)

    def __post_init__(self):
        self.shape = tuple(self.shape)
        if self.dtype not in DTYPES:
            raise ValueError(f'dtype must be one of {", ".join(DTYPES)}, got {self.dtype!r}')
        if self.device.startswith('cuda') and not torch.cuda.is_available():
            raise ValueError(f'device {self.device!r}: no CUDA device available')
        if self.dtype != 'float32' and not self.device.startswith('cuda'):
            raise ValueError(f'dtype {self.dtype} is meant for CUDA; on CPU measure float32')
        for name in ('batch', 'threads', 'rounds', 'iters'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')

    def public(self) -> dict:
        """The settings as recorded in the JSON (without the temporary work directory)."""
        return {k: v for k, v in asdict(self).items() if k != 'workdir'}


# -- cases -------------------------------------------------------------------------------------
@dataclass
class Case:
    """A built case: ``fn()`` runs it once; ``info`` goes into the JSON (fuse time, skips...)."""
    fn: Callable[[], object]
    info: dict = field(default_factory=dict)


def _input(settings: Settings, memory_format: str = 'nchw') -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(settings.batch, 3, *settings.shape, generator=gen)
    return x.to(settings.device, DTYPES[settings.dtype]).contiguous(memory_format=MEMORY_FORMATS[memory_format])


def _place(model: nn.Module, settings: Settings, memory_format: str) -> nn.Module:
    return model.to(settings.device, DTYPES[settings.dtype], memory_format=MEMORY_FORMATS[memory_format]).eval()


def _inference(module: Callable, *args) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return module(*args)
    return run


def _ort_case(module: nn.Module, settings: Settings, tag: str) -> Case:
    """onnxruntime on the TorchScript export of ``module`` (fp32, NCHW input)."""
    import onnxruntime as ort

    from rep_backbones.deploy.export import export_onnx
    from rep_backbones.deploy.runtimes import ort_session
    if settings.dtype != 'float32':
        return Case(None, dict(skipped=f'onnxruntime is measured in float32 only (asked {settings.dtype})'))
    x = _input(settings)
    path = os.path.join(settings.workdir, f'{tag}.onnx')
    export_onnx(module.cpu().float().eval(), x.cpu(), path)
    if settings.device.startswith('cuda'):
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            return Case(None, dict(skipped='onnxruntime has no CUDAExecutionProvider here'))
        session = ort.InferenceSession(path, providers=['CUDAExecutionProvider'])
    else:
        session = ort_session(path, settings.threads)
    feed = {session.get_inputs()[0].name: x.cpu().numpy()}
    return Case(lambda: session.run(None, feed), dict(onnx_bytes=os.path.getsize(path)))


def _timed_fuse(model: nn.Module, **kwargs) -> Tuple[nn.Module, float]:
    t0 = time.perf_counter()
    rep_backbones.fuse(model, **kwargs)
    return model, time.perf_counter() - t0


def _backbone_case(case: dict, settings: Settings) -> Case:
    """``{'backbone': 'NAME:ARCH', 'variant': train|upstream|fused|fused_compiled|ort,
    'memory_format': nchw|channels_last}``."""
    from rep_backbones.io.build import build_from_spec
    torch.manual_seed(0)
    model = build_from_spec(case['backbone'])
    variant, fmt = case['variant'], case.get('memory_format', 'nchw')
    info = {}
    if variant == 'upstream':
        try:
            model = official_fused(model)
        except NoOfficialForm as err:
            return Case(None, dict(skipped=str(err)))
    elif variant in ('fused', 'fused_compiled', 'ort'):
        model, info['fuse_s'] = _timed_fuse(model)
    elif variant != 'train':
        raise ValueError(f'unknown backbone variant {variant!r}; expected one of '
                         f'{", ".join(BACKBONE_VARIANTS + ("fused_compiled",))}')
    if variant == 'ort':
        return _merge(_ort_case(model, settings, _tag(case)), info)
    model = _place(model, settings, fmt)
    if variant == 'fused_compiled':
        model = torch.compile(model, mode=settings.compile_mode)
    return Case(_inference(model, _input(settings, fmt)), info)


def _tag(case: dict) -> str:
    return ''.join(c if c.isalnum() else '_' for c in json.dumps(case, sort_keys=True))[:120]


def _merge(case: Case, info: dict) -> Case:
    case.info.update(info)
    return case


def _is_two_stage(model: nn.Module) -> bool:
    return hasattr(model, 'rpn_head') and hasattr(model, 'roi_head')


def _scope(model: nn.Module) -> str:
    return model.cfg.get('default_scope') or ('mmseg' if hasattr(model, 'decode_head') else 'mmdet')


def predict_batch(model: nn.Module, settings: Settings):
    """``(inputs, data_samples)`` for ``model.predict``: a seeded random uint8 image of ``shape`` per
    batch item through the model's own data preprocessor (normalise, pad, image metadata)."""
    h, w = settings.shape
    gen = torch.Generator().manual_seed(0)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0))
    if _scope(model) == 'mmseg':
        from mmseg.structures import SegDataSample as Sample
    else:
        from mmdet.structures import DetDataSample as Sample
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for _ in range(settings.batch)]
    data = model.data_preprocessor(dict(inputs=images, data_samples=[Sample(metainfo=meta) for _ in images]),
                                   False)
    return data['inputs'].to(DTYPES[settings.dtype]), data['data_samples']


@functools.lru_cache(maxsize=1)
def _built_model(config: str, checkpoint: Optional[str]) -> nn.Module:
    """The eval-mode model of a config on the CPU, built once for all forms of a table group
    (each case works on a deep copy)."""
    from rep_backbones.io.build import build_model_from_config
    torch.manual_seed(0)
    return build_model_from_config(config, checkpoint, 'cpu')


def _model_case(case: dict, settings: Settings) -> Case:
    """``{'config': PATH, 'form': train|fused|fused_whole|ort, 'mode': tensor|predict,
    'memory_format': nchw|channels_last, 'checkpoint': None}``. Two-stage detectors run
    backbone + neck in tensor mode (their RoI stage needs NMS proposals)."""
    from rep_backbones.io.build import TensorModeWrapper
    form, mode, fmt = case['form'], case['mode'], case.get('memory_format', 'nchw')
    if mode not in MODEL_MODES:
        raise ValueError(f'unknown mode {mode!r}; expected one of {", ".join(MODEL_MODES)}')
    if form == 'ort' and mode != 'tensor':
        return Case(None, dict(skipped='onnxruntime runs the tensor-mode graph only'))
    model = copy.deepcopy(_built_model(case['config'], case.get('checkpoint')))
    info = {}
    if form == 'fused_whole':
        model, info['fuse_s'] = _timed_fuse(model, whole=True)
    elif form in ('fused', 'ort'):
        whole = form == 'ort'                               # onnxruntime gets the most fused graph there is
        model, info['fuse_s'] = _timed_fuse(model, whole=whole)
        info['fused_with'] = 'fuse(whole=True)' if whole else 'fuse'
    elif form != 'train':
        raise ValueError(f'unknown form {form!r}; expected one of {", ".join(MODEL_FORMS)}')
    part = 'features' if _is_two_stage(model) else 'full'
    if mode == 'tensor':
        info['part'] = part
    if form == 'ort':
        return _merge(_ort_case(TensorModeWrapper(model, part).eval(), settings, _tag(case)), info)
    model = _place(model, settings, fmt)
    if mode == 'tensor':
        return Case(_inference(TensorModeWrapper(model, part).eval(), _input(settings, fmt)), info)
    inputs, samples = predict_batch(model, settings)
    inputs = inputs.to(settings.device).contiguous(memory_format=MEMORY_FORMATS[fmt])
    return Case(_inference(model.predict, inputs, samples), info)


def _train_case(case: dict, settings: Settings) -> Case:
    """One SGD step of a detector in train mode: ``{'config': PATH, 'with_cp': bool}``; toy boxes
    (and masks for Mask R-CNN) from ``mmdet.testing.demo_mm_inputs``."""
    from mmdet.testing import demo_mm_inputs

    from rep_backbones.io.build import build_model_from_config
    options = {}
    if case.get('with_cp'):
        options['model.backbone.with_cp'] = True
    torch.manual_seed(0)
    # built on the CPU, which turns SyncBN into BN: one process trains here, without a process group
    model = build_model_from_config(case['config'], None, 'cpu', cfg_options=options).to(settings.device).train()
    h, w = settings.shape
    packed = demo_mm_inputs(settings.batch, [(3, h, w)] * settings.batch, num_items=[4] * settings.batch,
                            num_classes=2, with_mask=_is_two_stage(model) and model.roi_head.with_mask)
    data = model.data_preprocessor(packed, True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    return Case(_train_step(model, optimizer, lambda: model(**data, mode='loss'), settings),
                dict(params=sum(p.numel() for p in model.parameters())))


def _classifier_train_case(case: dict, settings: Settings) -> Case:
    """One SGD step of an ImageNet classifier: ``{'classifier': 'FAMILY:ARCH'}`` (ours) or
    ``{'timm': NAME}`` (timm's port of the official model)."""
    torch.manual_seed(0)
    if 'timm' in case:
        import timm
        model = timm.create_model(case['timm'], pretrained=False)
    else:
        from rep_backbones.io.build import build_from_spec

        from .models import CLASSIFIERS
        model = build_from_spec(case['classifier'], CLASSIFIERS)
    model = model.to(settings.device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(settings.batch, 3, *settings.shape, generator=gen).to(settings.device)
    target = torch.randint(0, 1000, (settings.batch,), generator=gen).to(settings.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def loss():
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out     # RepNeXt distillation pair: first head
        return {'loss': nn.functional.cross_entropy(out, target)}
    return Case(_train_step(model, optimizer, loss, settings), dict(params=sum(p.numel() for p in model.parameters())))


def _train_step(model: nn.Module, optimizer, losses: Callable[[], dict], settings: Settings):
    autocast = settings.dtype != 'float32'

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(settings.device.split(':')[0], DTYPES[settings.dtype], enabled=autocast):
            out = losses()
        total = sum(v.sum() if not isinstance(v, (list, tuple)) else sum(t.sum() for t in v)
                    for k, v in out.items() if 'loss' in k)
        total.backward()
        optimizer.step()
        return total
    return step


def build_case(case: dict, settings: Settings) -> Case:
    """Dispatch on the case's keys (see the ``_*_case`` builders for each kind's fields)."""
    torch.set_num_threads(settings.threads)
    if 'backbone' in case:
        return _backbone_case(case, settings)
    if 'form' in case:
        return _model_case(case, settings)
    if 'with_cp' in case:
        return _train_case(case, settings)
    if 'classifier' in case or 'timm' in case:
        return _classifier_train_case(case, settings)
    raise ValueError(f'unrecognised benchmark case {case}')


def _proc_status_kb(field_name: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field_name + ':'):
                return int(line.split()[1])
    raise KeyError(field_name)


def peak_memory(fn: Callable[[], object], calls: int, device: str) -> dict:
    """Peak extra memory (MiB) while ``fn`` runs ``calls`` times, in this process (see module doc)."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        return dict(peak_mib=(torch.cuda.max_memory_allocated() - before) / 2 ** 20,
                    resident_mib=before / 2 ** 20, memory_method='torch.cuda.max_memory_allocated')
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')                      # reset VmHWM to the current RSS
        method = 'VmHWM after /proc/self/clear_refs reset'
    except OSError:
        method = 'getrusage ru_maxrss delta'
    before = _proc_status_kb('VmRSS') if method.startswith('VmHWM') else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss
    for _ in range(calls):
        fn()
    after = _proc_status_kb('VmHWM') if method.startswith('VmHWM') else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss
    return dict(peak_mib=max(after - before, 0) / 1024, resident_mib=_proc_status_kb('VmRSS') / 1024,
                memory_method=method)


def measure_memory_in_subprocess(case: dict, settings: Settings, calls: int = 2, timeout: float = 900) -> dict:
    """:func:`peak_memory` of ``case`` in a fresh Python process (after one warm-up call)."""
    payload = json.dumps(dict(case=case, settings=asdict(settings), calls=calls))
    # glibc: a fixed mmap threshold makes every block >= 64 KiB its own mapping, returned to the system
    # when freed, so the resident size follows the live tensors (with the default dynamic threshold a
    # freed warm-up step stays resident and the next step's peak would not show)
    env = dict(os.environ, OMP_NUM_THREADS=str(settings.threads), MALLOC_MMAP_THRESHOLD_='65536',
               MALLOC_TRIM_THRESHOLD_='0')
    proc = subprocess.run([sys.executable, '-m', 'rep_backbones.benchmark', payload], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'memory probe for {case} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _probe_main(payload: str) -> None:
    spec = json.loads(payload)
    settings = Settings(**spec['settings'])
    built = build_case(spec['case'], settings)
    if built.fn is None:
        result = dict(skipped=built.info.get('skipped'))
    else:
        built.fn()                              # warm-up: lazy initialisation is not the steady state
        result = peak_memory(built.fn, spec['calls'], settings.device)
    print(json.dumps(result))


# -- tables ------------------------------------------------------------------------------------
def _run_table(groups: Dict[str, Dict[tuple, dict]], settings: Settings,
               memory: bool) -> Tuple[List[dict], Dict[str, str]]:
    """Build and time each group's cases (interleaved within a group); one row per measured case
    with the case's fields, its timing summary, its build info and (``memory``) its peak memory."""
    rows, notes = [], {}
    for label, cases in groups.items():
        built = {}
        for key, case in cases.items():
            try:    # a form that cannot be built or run here is reported, the rest of the run goes on
                result = build_case(case, settings)
                if result.fn is not None:
                    result.fn()
            except Exception as err:  # noqa: BLE001  (anything a model raises: recorded in the JSON)
                notes[f'{label} {"/".join(map(str, key))}'] = f'failed: {type(err).__name__}: {err}'
                print(f'benchmark: {label} {key}: {type(err).__name__}: {err}', file=sys.stderr)
                continue
            if result.fn is None:
                notes[f'{label} {key[0]}'] = result.info['skipped']
            else:
                built[key] = result
        times = interleaved({k: b.fn for k, b in built.items()}, settings.rounds, settings.iters, settings.warmup,
                            settings.device)
        for key, result in built.items():
            row = dict(model=label, **{k: v for k, v in cases[key].items() if k not in ('backbone', 'config')},
                       **summarize(times[key], settings.batch), **result.info)
            if memory:
                try:
                    row.update(measure_memory_in_subprocess(cases[key], settings))
                except RuntimeError as err:
                    notes[f'{label} {"/".join(map(str, key))} memory'] = str(err)[-500:]
            rows.append(row)
        del built
    return rows, notes


def _speedups(rows: List[dict], base_key: Callable[[dict], tuple], base_name: str) -> None:
    """``speedup_vs_<base>`` = base median / row median, for rows sharing ``base_key``."""
    bases = {base_key(r): r['median_ms'] for r in rows if r.get('variant', r.get('form')) == base_name}
    for r in rows:
        base = bases.get(base_key(r))
        if base:
            r[f'speedup_vs_{base_name}'] = base / r['median_ms']


def expand_backbone_specs(specs: Sequence[str]) -> List[str]:
    """``NAME[:ARCH]`` specs with the arch filled in; ``all`` = every registered backbone at its
    default arch."""
    from rep_backbones.io.build import parse_backbone_spec

    from .models import BACKBONES
    out = []
    for spec in specs:
        for one in (sorted(BACKBONES) if spec == 'all' else [spec]):
            cfg = parse_backbone_spec(one, fill_default=True)
            out.append(f"{cfg['type']}:{cfg['arch']}" if 'arch' in cfg else cfg['type'])
    return out


def benchmark_backbones(specs: Sequence[str], settings: Settings, variants: Sequence[str] = BACKBONE_VARIANTS,
                        memory_formats: Sequence[str] = ('nchw', 'channels_last'), memory: bool = False) -> dict:
    """The family table: every backbone in every variant x memory format (onnxruntime: NCHW only;
    ``fused_compiled`` added when ``settings.compile_mode``), interleaved per backbone."""
    for fmt in memory_formats:
        if fmt not in MEMORY_FORMATS:
            raise ValueError(f'unknown memory format {fmt!r}; expected one of {", ".join(MEMORY_FORMATS)}')
    for v in variants:
        if v not in BACKBONE_VARIANTS:
            raise ValueError(f'unknown variant {v!r}; expected one of {", ".join(BACKBONE_VARIANTS)}')
    torch_variants = [v for v in variants if v != 'ort'] + (['fused_compiled'] if settings.compile_mode else [])
    groups = {}
    for spec in expand_backbone_specs(specs):
        cases = {(v, fmt): dict(backbone=spec, variant=v, memory_format=fmt)
                 for fmt in memory_formats for v in torch_variants}
        if 'ort' in variants:
            cases[('ort', 'nchw')] = dict(backbone=spec, variant='ort', memory_format='nchw')
        groups[spec] = cases
    rows, notes = _run_table(groups, settings, memory)
    _speedups(rows, lambda r: (r['model'], r['memory_format']), 'train')
    return dict(kind='backbones', settings=settings.public(), environment=environment(settings),
                fuse_seconds={r['model']: r['fuse_s'] for r in rows
                              if r['variant'] == 'fused' and r['memory_format'] == memory_formats[0]},
                summary=backbone_summary(rows), notes=notes, results=rows)


def backbone_summary(rows: List[dict]) -> List[dict]:
    """Per backbone and memory format: median ms of each variant, the time ratios ``fused/upstream``,
    ``fused/train``, ``ort/fused``, ``compiled/fused`` (< 1: the numerator is faster), and the family goal
    with whether this run met it. The goal's two ratios are also given from each form's fastest call
    (``... (fastest)``, ``goal_met_fastest``): on a machine shared with other work, interference only ever
    adds time, so where median and fastest call disagree the run cannot tell."""
    out = []
    for model in dict.fromkeys(r['model'] for r in rows):
        mine = [r for r in rows if r['model'] == model]
        ort = next((r['median_ms'] for r in mine if r['variant'] == 'ort'), None)
        for fmt in dict.fromkeys(r['memory_format'] for r in mine if r['variant'] != 'ort'):
            ms = {r['variant']: r['median_ms'] for r in mine if r['memory_format'] == fmt}
            fastest = {r['variant']: r['min_ms'] for r in mine if r['memory_format'] == fmt}
            entry = dict(model=model, memory_format=fmt, median_ms=ms)
            if 'fused' in ms:
                if 'train' in ms:
                    entry['fused/train'] = ms['fused'] / ms['train']
                    entry['fused/train (fastest)'] = fastest['fused'] / fastest['train']
                if 'upstream' in ms:
                    entry['fused/upstream'] = ms['fused'] / ms['upstream']
                    entry['fused/upstream (fastest)'] = fastest['fused'] / fastest['upstream']
                    entry['goal'] = f'fused/upstream <= {GOAL_VS_UPSTREAM}'
                    entry['goal_met'] = entry['fused/upstream'] <= GOAL_VS_UPSTREAM
                    entry['goal_met_fastest'] = entry['fused/upstream (fastest)'] <= GOAL_VS_UPSTREAM
                elif 'train' in ms:
                    entry['goal'] = f'train/fused >= {GOAL_VS_TRAIN}'
                    entry['goal_met'] = ms['train'] / ms['fused'] >= GOAL_VS_TRAIN
                    entry['goal_met_fastest'] = fastest['train'] / fastest['fused'] >= GOAL_VS_TRAIN
                if ort is not None:
                    entry['ort/fused'] = ort / ms['fused']
                if 'fused_compiled' in ms:
                    entry['compiled/fused'] = ms['fused_compiled'] / ms['fused']
            out.append(entry)
    return out


def benchmark_models(configs: Sequence[str], settings: Settings, forms: Sequence[str] = MODEL_FORMS,
                     modes: Sequence[str] = MODEL_MODES, memory_formats: Sequence[str] = ('nchw',),
                     memory: bool = False, checkpoint: Optional[str] = None) -> dict:
    """Whole detectors / segmentors: every form x mode x memory format of each config, interleaved
    per config (onnxruntime: tensor mode, NCHW). Forms that cannot run here are listed in ``notes``."""
    for f in forms:
        if f not in MODEL_FORMS:
            raise ValueError(f'unknown form {f!r}; expected one of {", ".join(MODEL_FORMS)}')
    groups = {}
    for config in configs:
        if not os.path.exists(config) and '::' not in config:
            raise FileNotFoundError(f'config {config!r} not found')
        label = os.path.splitext(os.path.basename(config.split('::')[-1]))[0]
        cases = {}
        for mode in modes:
            for fmt in memory_formats:
                for form in forms:
                    if form == 'ort' and (mode != 'tensor' or fmt != 'nchw'):
                        continue
                    cases[(form, mode, fmt)] = dict(config=config, checkpoint=checkpoint, form=form, mode=mode,
                                                    memory_format=fmt)
        groups[label] = cases
    rows, notes = _run_table(groups, settings, memory)
    _speedups(rows, lambda r: (r['model'], r['mode'], r['memory_format']), 'train')
    return dict(kind='models', settings=settings.public(), environment=environment(settings), notes=notes,
                results=rows)


# Our ImageNet classifier next to timm's port of the official one (same blocks for RepGhostNet; timm's
# MobileNetV4 uses BatchNormAct2d, i.e. BN and activation in one module, where ours has BN + act).
UPSTREAM_TRAIN_PAIRS = (('RepGhostNet:1.0x', 'repghostnet_100'), ('RepGhostNet:1.3x', 'repghostnet_130'),
                        ('MobileNetV4:S', 'mobilenetv4_conv_small'))


def benchmark_training(configs: Sequence[str], settings: Settings, memory: bool = True,
                       classifier_pairs: Sequence[Tuple[str, str]] = UPSTREAM_TRAIN_PAIRS) -> dict:
    """Training step time and peak memory of each detector config with and without ``with_cp``,
    and of our classifiers next to timm's (the upstream-style training form), interleaved per group.
    Each classifier is timed twice (form ``'train, repeated'``: a second, identical model): how far
    that ratio is from 1.00x is how far apart two equal training forms come out in the same run, the
    yardstick for the ours-vs-timm ratio."""
    groups = {}
    for config in configs:
        label = os.path.splitext(os.path.basename(config))[0]
        groups[label] = {(f'with_cp={cp}',): dict(config=config, with_cp=cp) for cp in (False, True)}
    for ours, theirs in classifier_pairs:   # ours twice: the repeat's ratio is the run's own noise floor
        groups[f'{ours} classifier'] = {('ours',): dict(classifier=ours), (f'timm {theirs}',): dict(timm=theirs),
                                        ('ours, repeated',): dict(classifier=ours, repeat=True)}
    rows, notes = _run_table(groups, settings, memory)
    for row in rows:
        if row.pop('with_cp', False):
            row['form'] = 'with_cp'
        elif 'timm' in row:
            row['form'] = 'timm ' + row.pop('timm')
        else:
            row['form'] = 'train, repeated' if row.pop('repeat', False) else 'train'
        row.pop('classifier', None)
    _speedups(rows, lambda r: (r['model'],), 'train')
    return dict(kind='training', settings=settings.public(), environment=environment(settings), notes=notes,
                results=rows)


# -- environment -------------------------------------------------------------------------------
def environment(settings: Settings) -> dict:
    """Versions, machine, threads, load average and (CUDA) the GPU name: recorded with every run."""
    import onnxruntime as ort
    env = dict(python=platform.python_version(), torch=torch.__version__, onnxruntime=ort.__version__,
               machine=platform.machine(), processor=platform.processor() or platform.machine(),
               cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), device=settings.device,
               dtype=settings.dtype)
    try:
        env['loadavg'] = list(os.getloadavg())
    except OSError:
        pass
    if settings.device.startswith('cuda'):
        env['gpu'] = torch.cuda.get_device_name(settings.device)
        env['cuda'] = torch.version.cuda
    return env


if __name__ == '__main__':
    _probe_main(sys.argv[1])
