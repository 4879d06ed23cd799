"""Shared test utilities: non-trivial BN statistics, the fused-vs-training equivalence checks,
subprocess and tool loading, in-process tool runs, optional dependencies, wheel builds."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import importlib.util
import io
import logging
import os
import runpy
import shutil
import socket
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import rep_backbones

ROOT = Path(__file__).resolve().parents[1]
# The project's fusion tolerance: max |fused - train| <= FUSE_RTOL * max |train| (float32, eval mode).
FUSE_RTOL = 1e-4
ODD_SIZE = (251, 331)
# BN running variances are drawn log-uniformly from this range (see randomize_bn).
BN_VAR_RANGE = (1e-4, 10.0)


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters (not the init values).

    * ``running_var`` log-uniform over :data:`BN_VAR_RANGE`: at 1e-4 the usual eps (1e-5) is 10 % of
      the variance, so an eps slip in a fold (left out, added outside the square root, a default in
      place of the module's) moves those channels by percents, far above any float32 tolerance;
    * ``weight`` = ``sqrt(running_var)`` x U(0.5, 1.5), so that each BN's gain ``weight / sqrt(var +
      eps)`` stays within about [0.45, 1.5] whatever the variance: deep nets stay bounded and float32
      is not amplified, while the variance (and eps) still decides every gain;
    * ``running_mean`` U(-1, 1), of the size of the activations it is subtracted from; ``bias``
      U(-0.5, 0.5).
    """
    gen = torch.Generator().manual_seed(seed)
    low, high = (torch.tensor(v).log() for v in BN_VAR_RANGE)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            n = module.num_features
            var = (low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)).exp()
            module.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            module.running_var.copy_(var)
            if module.weight is not None:
                module.weight.copy_(var.sqrt() * (torch.rand(n, generator=gen, dtype=torch.float64) + 0.5))
                module.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


def count_norms(model: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def assert_rel_close(ref, out, rtol: float = FUSE_RTOL, what: str = 'output') -> None:
    """``ref`` and ``out`` (tensors or nested sequences of them) have the same number of tensors, the same
    shapes, and ``max |out - ref| <= rtol * max |ref|`` tensor by tensor."""
    ref, out = _flat(ref), _flat(out)
    assert len(ref) == len(out), f'{len(out)} {what}s, expected {len(ref)}'
    for a, b in zip(ref, out):
        assert a.shape == b.shape, f'{what} shape {tuple(b.shape)}, expected {tuple(a.shape)}'
        err, scale = (a - b).abs().max().item(), a.abs().max().item()
        assert err <= rtol * scale, f'{what} differs: max |diff| {err:.3g} > {rtol} * {scale:.3g}'


@torch.no_grad()
def assert_fuses_exactly(model: nn.Module, x: torch.Tensor, rtol: float = FUSE_RTOL, fuse_fn=None,
                         float64: bool = True) -> nn.Module:
    """Give ``model`` random BN statistics (:func:`randomize_bn`), put it in eval mode, fuse a deep copy
    with ``fuse_fn`` (default :func:`rep_backbones.fuse`) and check it with :func:`assert_fusion_exact`;
    returns the fused copy."""
    fuse_fn = fuse_fn or rep_backbones.fuse
    randomize_bn(model)
    model.eval()
    fused = fuse_fn(copy.deepcopy(model))
    assert_fusion_exact(model, fused, x, fuse_fn, rtol=rtol, float64=float64)
    return fused


# Copies of ../shared/reference/keys: every key (name and shape) of the official checkpoints.
KEYS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'keys')


def keys_file(name: str) -> str:
    """Path of a reference key list (``NAME.keys.txt`` / ``NAME.fused_keys.txt``)."""
    return os.path.join(KEYS_DIR, name)


def synthetic_state_dict(path: str, seed: int = 0) -> dict:
    """A state dict with the names and shapes listed in a reference keys file (``name (d0, d1)``),
    filled with random values (positive ``running_var``)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            name, shape = line.split(' ', 1)
            dims = tuple(int(d) for d in shape.strip('()').split(',') if d.strip())
            if name.endswith('num_batches_tracked'):
                state[name] = torch.tensor(100)
            elif name.endswith('running_var'):
                state[name] = torch.rand(dims, generator=gen) + 0.5
            else:
                state[name] = torch.randn(dims, generator=gen) * 0.1
    return state


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Non-trivial but realistic BN state: running statistics measured on ``x`` (one train-mode pass
    with momentum 1) and random affine parameters. Keeps activations bounded in deep plain nets
    (RepMobile), where fully random statistics blow float32 up."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for m in norms:
        m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
        m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    model.train()
    for m in norms:
        m.momentum = 1.0
    model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return model


def _flat(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in _flat(item)]


@contextlib.contextmanager
def _default_dtype(dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


# float64 fusion must reproduce the float64 training form to this relative error: the algebra is exact,
# so only float64 rounding remains (measured: <= 1e-11 on every family, RepMobile-S in RetinaNet included).
FUSE_RTOL_FLOAT64 = 1e-9


@torch.no_grad()
def assert_fusion_exact(model: nn.Module, fused: nn.Module, x: torch.Tensor, fuse_fn, forward=None,
                        rtol: float = FUSE_RTOL, float64: bool = True) -> None:
    """Fused vs training form (both eval mode), in two parts:

    1. the algebra, in float64: ``fuse_fn`` applied to a float64 copy of ``model`` matches it to
       :data:`FUSE_RTOL_FLOAT64` (a fusion error shows up here whatever the conditioning). Layers that
       the fusion creates are built in float64 too (default dtype float64 while ``fuse_fn`` runs: timm's
       fusers make new layers), and the fused copy must hold no float32 tensor;
    2. float32, the deployed precision: ``fused`` matches ``model`` to ``rtol`` relative to the
       largest output, or to 4x the training form's *own* float32 error against float64, whichever is
       larger. A net that amplifies rounding (RepMobile's deep plain stages with near-zero BN variances:
       1e-7 input noise -> 1e-3 at stride 16) cannot be held to tighter than its own float32 error.

    Both parts compare every output: same number of tensors, same shapes. ``float64=False`` leaves part 1
    out (and holds float32 to ``rtol``): for a fusion path whose float64 check runs elsewhere (the contract
    test checks every variant's default fusion in float64).
    """
    forward = forward or (lambda m, inp: m(inp))
    ref32, out32 = _flat(forward(model, x)), _flat(forward(fused, x))
    if float64:
        model64 = copy.deepcopy(model).double().eval()
        with _default_dtype(torch.float64):
            fused64 = fuse_fn(copy.deepcopy(model64)).eval()
        low = [n for n, t in [*fused64.named_parameters(), *fused64.named_buffers()]
               if t.is_floating_point() and t.dtype != torch.float64]
        assert not low, f'the float64 fusion left lower-precision tensors: {low[:5]}'
        ref64, out64 = _flat(forward(model64, x.double())), _flat(forward(fused64, x.double()))
    else:
        ref64 = out64 = [r.double() for r in ref32]
    assert len(ref64) == len(out64) == len(ref32) == len(out32), \
        f'number of outputs: training {len(ref32)}, fused {len(out32)} (float64: {len(ref64)}, {len(out64)})'
    for r64, o64, r32, o32 in zip(ref64, out64, ref32, out32):
        assert r64.shape == o64.shape == r32.shape == o32.shape, (r64.shape, o64.shape, r32.shape, o32.shape)
        scale = r64.abs().max().item()
        algebra = (o64 - r64).abs().max().item()
        assert algebra <= FUSE_RTOL_FLOAT64 * scale, f'fusion is not exact: float64 max |diff| {algebra:.3g} > ' \
                                                      f'{FUSE_RTOL_FLOAT64} * {scale:.3g}'
        noise = (r32.double() - r64).abs().max().item()
        err = (o32.double() - r32.double()).abs().max().item()
        assert err <= max(rtol * scale, 4 * noise), f'fused float32 output differs: max |diff| {err:.3g} > ' \
                                                    f'max({rtol} * {scale:.3g}, 4 * {noise:.3g})'


@torch.no_grad()
def damp_deep_plain_backbone(model: nn.Module, factor: float = 0.7) -> nn.Module:
    """RepMobile-L's 20-block plain stage is chaotic with random BN statistics (float32 vs float64 of the
    *training* form alone: ~5% apart at layer3; tests/test_repmobile.py): scale its conv weights so
    that a float32 comparison measures the algebra, not rounding amplification. Other models: unchanged."""
    backbone = getattr(model, 'backbone', model)
    if type(backbone).__name__ == 'RepMobile' and getattr(backbone, 'arch', None) == 'L':
        for m in backbone.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(factor)
    return model


# -- optional dependencies -------------------------------------------------------------------------
# Set by CI (.ci/run, tools/run_tests.sh under CI=true): a missing optional dependency fails the test
# instead of skipping it.
def assert_test_step_runs(model: nn.Module) -> None:
    """The model's config test step on one 96x128 image (pre-processing, network, post-processing): a detection
    per image from mmdet models, ``num_classes`` logit maps from mmseg ones (``model.cfg``: its config)."""
    cfg = model.cfg
    with torch.no_grad():
        if cfg.default_scope == 'mmdet':
            from mmdet.testing import demo_mm_inputs
            results = model.test_step(demo_mm_inputs(1, [[3, 96, 128]], use_box_type=True))
            assert len(results) == 1 and hasattr(results[0], 'pred_instances')
        else:
            logits = model(torch.randn(1, 3, 96, 128), mode='tensor')
            assert logits.shape[:2] == (1, cfg.model.decode_head.num_classes)


REQUIRE_ALL_ENV = 'REP_BACKBONES_REQUIRE_ALL'


def missing_dependency(reason: str):
    """Skip the calling test, or fail it where :data:`REQUIRE_ALL_ENV` is ``1`` (CI). The reason names the
    test (``-rs`` lists a skip by the place it was raised: here)."""
    reason = f"{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]}: {reason}"
    if os.environ.get(REQUIRE_ALL_ENV) == '1':
        pytest.fail(f'{reason} ({REQUIRE_ALL_ENV}=1: every dependency must be there)', pytrace=False)
    pytest.skip(reason)


def require(*modules: str) -> None:
    """Import ``modules`` (e.g. ``'mmdet'``, ``'mmcv.ops'``) or :func:`missing_dependency`."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001  (compiled extensions fail with OSError, RuntimeError, ...)
            missing_dependency(f'{name} is not importable here: {type(err).__name__}: {err}')


def require_mim() -> str:
    """Path of the ``mim`` executable beside this interpreter, or :func:`missing_dependency`."""
    mim = shutil.which('mim', path=os.path.dirname(sys.executable))
    if mim is None:
        missing_dependency('openmim (the mim command) is not installed beside this interpreter')
    return mim


# -- tools and subprocesses ------------------------------------------------------------------------
def load_tool(relpath: str):
    """Import a script of the repository (``tools/benchmark.py``) as a module without touching
    ``sys.path`` or ``sys.modules`` (what the script itself adds to ``sys.path`` is undone)."""
    path = ROOT / relpath
    name = 'tool_' + relpath.replace('/', '_').replace('.', '_')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def run(args, cwd=ROOT, env=None, unset=(), timeout=600) -> subprocess.CompletedProcess:
    """Run a command as a user does (text output captured, arguments as strings), in this process's
    environment with ``env`` added and the variables in ``unset`` removed."""
    full = {k: v for k, v in os.environ.items() if k not in unset}
    full.update(env or {})
    return subprocess.run([str(a) for a in args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout)


def run_ok(args, **kwargs) -> str:
    """:func:`run`, which must succeed; returns stdout + stderr."""
    proc = run(args, **kwargs)
    assert proc.returncode == 0, f'{" ".join(map(str, args))}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc.stdout + proc.stderr


@dataclasses.dataclass
class ToolResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_tool(relpath: str, *args, cwd=ROOT, env=None) -> ToolResult:
    """Run a script of the repository *in this process* as ``python RELPATH ARGS...`` would (``__main__``,
    ``sys.argv``, the script's folder first on ``sys.path``), in ``cwd``, with ``env`` added to the
    environment: a new interpreter spends 8-11 s importing torch / mmengine / mmdet, which this one has done.
    Python-level stdout and stderr are captured (MMLogger handlers made during the run write there, warnings
    go to stderr); ``SystemExit`` gives the return code, any other exception status 1 and its traceback.

    Restored afterwards: cwd, ``sys.argv``, ``sys.path``, the environment, the script folder's modules it
    imported, torch's thread count, default dtype and grad mode, OpenCV's thread count, the root logger's
    handlers and level, ``warnings`` filters, and every mmengine managed instance made during the run
    (loggers, with their handlers closed; message hubs, visualizers, default scopes): a Runner names these
    by the second, so a second run would otherwise get the first one's logger. Not restored: the random
    generators (a Runner seeds them; each test starts seeded, tests/conftest.py)."""
    path = str(ROOT / relpath)
    stdout, stderr = io.StringIO(), io.StringIO()
    with _restored_process_state(os.path.dirname(path)), warnings.catch_warnings(), \
            contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        warnings.showwarning = _printed_warning(stderr)
        os.chdir(cwd)
        os.environ.update({k: str(v) for k, v in (env or {}).items()})
        sys.argv = [path, *map(str, args)]
        sys.path.insert(0, os.path.dirname(path))
        try:
            runpy.run_path(path, run_name='__main__')
            returncode = 0
        except SystemExit as exit_:
            returncode = _exit_status(exit_.code, stderr)
        except Exception:  # noqa: BLE001  (a crashing script: its traceback and status 1)
            traceback.print_exc(file=stderr)
            returncode = 1
    return ToolResult(returncode, stdout.getvalue(), stderr.getvalue())


def run_tool_ok(relpath: str, *args, **kwargs) -> str:
    """:func:`run_tool`, which must succeed; returns its output."""
    result = run_tool(relpath, *args, **kwargs)
    assert result.returncode == 0, f'{relpath} {" ".join(map(str, args))}: status {result.returncode}\n' \
                                   f'{result.stdout[-3000:]}\n{result.stderr[-5000:]}'
    return result.output


def _printed_warning(stream: io.StringIO):
    """A ``warnings.showwarning`` that prints into ``stream``, as the script's own interpreter would print
    to its stderr (not recorded by pytest's warning capture)."""
    def show(message, category, filename, lineno, file=None, line=None):
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))
    return show


def _exit_status(code, stderr: io.StringIO) -> int:
    """The status Python exits with for ``sys.exit(code)`` (a message is printed to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=stderr)
    return 1


@contextlib.contextmanager
def _restored_process_state(script_dir: str):
    """Process-wide state that a tool may change, put back as it was (see :func:`run_tool`)."""
    cwd, argv, path, environ = os.getcwd(), list(sys.argv), list(sys.path), dict(os.environ)
    modules = set(sys.modules)
    threads, dtype, grad = torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()
    cv2 = sys.modules.get('cv2')             # a Runner sets OpenCV's thread count (to 0)
    cv2_threads = cv2 and cv2.getNumThreads()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    managed = _managed_instances()
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.argv, sys.path[:] = argv, path
        os.environ.clear()
        os.environ.update(environ)
        for name in set(sys.modules) - modules:   # siblings of the script, found through its folder
            if os.path.dirname(getattr(sys.modules[name], '__file__', None) or '') == script_dir:
                del sys.modules[name]
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        if cv2:
            cv2.setNumThreads(cv2_threads)
        root.handlers[:] = handlers
        root.setLevel(level)
        _drop_new_instances(managed)


def _managed_instances() -> dict:
    """mmengine's global instances (``ManagerMixin`` subclasses: MMLogger, MessageHub, Visualizer,
    DefaultScope, ...) by class; empty where mmengine is not imported."""
    if 'mmengine' not in sys.modules:
        return {}
    from mmengine.utils import ManagerMixin

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    return {cls: dict(cls._instance_dict) for cls in subclasses(ManagerMixin)}


def _drop_new_instances(before: dict) -> None:
    """Forget the managed instances made since :func:`_managed_instances` gave ``before`` (closing new
    loggers' handlers: their log files and the captured stream); the current instance is the one before."""
    for cls, instances in _managed_instances().items():
        kept = before.get(cls, {})
        for name, instance in instances.items():
            if name not in kept and isinstance(instance, logging.Logger):
                for handler in instance.handlers:
                    handler.close()
        cls._instance_dict.clear()
        cls._instance_dict.update(kept)


def free_port() -> int:
    """A TCP port nobody listens on right now (for a distributed run's rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def random_backbone_state(seed: int = 0) -> dict:
    """A RepGhostNet-0.5x state dict with random weights and BN statistics (not the init values)."""
    torch.manual_seed(seed)
    state = rep_backbones.build_backbone('RepGhostNet', arch='0.5x').state_dict()
    return {k: torch.randn_like(v).abs() if v.is_floating_point() else v for k, v in state.items()}


# -- packaging ---------------------------------------------------------------------------------------
_NOT_PACKAGED = ('.git', '.venv', 'build', 'dist', 'outputs', 'work_dirs', 'data', '*.egg-info', '__pycache__',
                 '.pytest_cache')


def build_wheel(tmp: Path) -> Path:
    """Build the package's wheel without writing into the checkout: the source tree (symlinks kept:
    ``rep_backbones/.mim`` links to configs/ and tools/) is copied to ``tmp/src``, setuptools builds there
    (its ``build/`` and ``*.egg-info``), the wheel lands in ``tmp/wheel``. Returns the wheel's path."""
    src, out = tmp / 'src', tmp / 'wheel'
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_PACKAGED))
    run_ok([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', str(src), '-w', str(out)],
           env={'TMPDIR': str(tmp)}, timeout=300)
    (wheel,) = out.glob('rep_backbones-*.whl')
    return wheel
