#!/usr/bin/env python
"""The GPU check: what the CPU tests cannot show, in one run of a few minutes on one CUDA GPU.

    python tools/gpu_check.py [--out-dir DIR] [--iters 20] [--skip STEP ...]

Steps (each timed; a failing step is reported and the next one runs):

1. ``mmcv-ops``: mmcv's compiled ops have CUDA kernels (else: the fix, docs/gpu.md); RoIAlign and NMS
   on CUDA tensors equal their CPU results.
2. ``fuse``: ``rep_backbones.fuse`` of one backbone per family on CUDA, float32 (TF32 off), BN and
   SyncBN forms, equal to the training form (max |diff| <= 1e-4 * max |output|).
3. ``train``: toy Mask R-CNN (configs/toy/, toy COCO from rep_backbones.toy_data) trained for
   ``--iters`` iterations with SyncBN in the backbone, through ``tools/dist_train.sh CONFIG 1``
   (torchrun, one process, NCCL), validation included.
4. ``test``: ``tools/dist_test.sh`` on that checkpoint with SyncBN kept: RepFuseHook fuses the model
   and checks it against the training form on the first batch (its max |diff| is reported).
5. ``bench-float16`` / ``bench-bfloat16``: ``tools/benchmark.py`` on CUDA: training form, fused, and
   ``torch.compile`` of the fused model; float16 in NCHW and channels-last, bfloat16 in channels-last.

Prints a summary table; writes it with every step's log to ``--out-dir`` (default ``$OUT`` when set,
else ``work_dirs/gpu_check``): ``gpu_check.md``, ``gpu_check.json``, ``logs/``. Exit status: 0 when
every step passed, 1 when one failed, 2 when there is no CUDA device (nothing is run).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
DET_CFG = 'configs/toy/toy_mask_rcnn_repghost_1_0x.py'
STEPS = ('mmcv-ops', 'fuse', 'train', 'test', 'bench-float16', 'bench-bfloat16')
# seconds a subprocess step may take (the whole check stays under 8 minutes)
TIMEOUTS = {'toy-data': 45, 'train': 130, 'test': 70, 'bench-float16': 100, 'bench-bfloat16': 70}
FUSE_RTOL = 1e-4
FUSE_SPECS = ('RepGhostNet:1.0x', 'RepGhostNetV2:S', 'MobileNetV4:S', 'RepNeXt:M0', 'RepMobile:S')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Check training, fusion and the benchmark on a CUDA GPU')
    parser.add_argument('--out-dir', default=os.environ.get('OUT') or 'work_dirs/gpu_check',
                        help='summary and logs (default: $OUT when set, else work_dirs/gpu_check)')
    parser.add_argument('--iters', type=int, default=20, help='toy Mask R-CNN training iterations')
    parser.add_argument('--skip', nargs='+', choices=STEPS, default=[], help='steps not to run')
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    return args


def no_cuda_message() -> Optional[str]:
    """Why this machine cannot run the check, or ``None`` when torch sees a CUDA device."""
    import torch
    if torch.cuda.is_available():
        return None
    build = f'CUDA {torch.version.cuda} build' if torch.version.cuda else 'CPU-only build'
    return (f'[gpu_check] no CUDA device: torch {torch.__version__} ({build}) sees no GPU '
            '(torch.cuda.is_available() is False). This check needs one NVIDIA GPU; nothing was run.')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _tail(text: str, n: int = 15) -> str:
    return '\n'.join(text.strip().splitlines()[-n:])


class Check:
    """Runs the steps, records ``rows`` (step, ok, seconds, details) and the logs. ``device``: where the
    in-process steps run (``cuda``; the tests run them on ``cpu``)."""

    def __init__(self, out_dir: Path, iters: int, device: str = 'cuda'):
        self.out_dir, self.iters, self.device = out_dir, iters, device
        self.logs = out_dir / 'logs'
        self.logs.mkdir(parents=True, exist_ok=True)
        self._work: Optional[Path] = None
        self.rows: List[dict] = []
        self.tables: Dict[str, str] = {}   # step -> the benchmark's markdown table
        self.checkpoint: Optional[Path] = None
        self.mmcv_ok: Optional[bool] = None   # None: the mmcv-ops step was skipped

    @property
    def work(self) -> Path:
        """Scratch folder of the toy data, checkpoints and work dirs (made when first used)."""
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix='gpu_check_'))
        return self._work

    def close(self) -> None:
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)

    def step(self, name: str, fn: Callable[[], str]) -> None:
        t0 = time.perf_counter()
        try:
            ok, details = True, fn()
        except Exception as err:  # noqa: BLE001  (every failure is reported, then the next step runs)
            ok, details = False, f'{type(err).__name__}: {err}'
        row = dict(step=name, ok=ok, seconds=round(time.perf_counter() - t0, 1), details=details)
        self.rows.append(row)
        print(f"[gpu_check] {name}: {'ok' if ok else 'FAILED'} ({row['seconds']} s) {details}", flush=True)

    def _run(self, name: str, args: List[str], env: Optional[Dict[str, str]] = None) -> str:
        """A tool as a user runs it; its output goes to logs/<name>.log; raises on failure or timeout."""
        full = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1', **(env or {}))
        log = self.logs / f'{name}.log'
        # own process group: a time-out ends torchrun's workers too (they would hold the GPU)
        proc = subprocess.Popen(args, cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=TIMEOUTS[name])
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            log.write_text(out)
            raise RuntimeError(f'timed out after {TIMEOUTS[name]} s (log: {log})') from None
        log.write_text(out)
        if proc.returncode != 0:
            raise RuntimeError(f'exit status {proc.returncode} (log: {log}):\n{_tail(out)}')
        return out

    # -- 1. mmcv's CUDA ops ------------------------------------------------------------------------
    def mmcv_ops(self) -> str:
        import torch
        from mmcv.ops import get_compiling_cuda_version, nms, roi_align

        from rep_backbones.mm.cuda_ops import FIX, mmcv_cuda_ops_problem
        self.mmcv_ok = False
        problem = mmcv_cuda_ops_problem()
        if problem is not None:
            raise RuntimeError(f'{problem}. Fix: {FIX}')
        gen = torch.Generator().manual_seed(0)
        feats = torch.randn(2, 8, 32, 32, generator=gen)
        xy = torch.rand(16, 2, generator=gen) * 20
        size = 4 + torch.rand(16, 2, generator=gen) * 8
        rois = torch.cat([torch.randint(0, 2, (16, 1), generator=gen).float(), xy, xy + size], 1)
        cpu = roi_align(feats, rois, (7, 7), 1.0, 2, 'avg', True)
        gpu = roi_align(feats.to(self.device), rois.to(self.device), (7, 7), 1.0, 2, 'avg', True).cpu()
        roi_diff = (cpu - gpu).abs().max().item()
        boxes, scores = rois[:, 1:].contiguous(), torch.rand(16, generator=gen)
        keep_cpu = nms(boxes, scores, 0.5)[1].tolist()
        keep_gpu = nms(boxes.to(self.device), scores.to(self.device), 0.5)[1].cpu().tolist()
        if roi_diff > 1e-4 or keep_cpu != keep_gpu:
            raise RuntimeError(f'{self.device} and CPU results differ: RoIAlign max |diff| {roi_diff:.3g}, '
                               f'NMS keeps {keep_gpu} on {self.device}, {keep_cpu} on CPU')
        self.mmcv_ok = True
        return (f'mmcv built with CUDA {get_compiling_cuda_version()}; RoIAlign max |diff| {self.device} vs CPU '
                f'{roi_diff:.2g}, NMS equal')

    # -- 2. fuse on CUDA ---------------------------------------------------------------------------
    def fuse(self) -> str:
        import torch
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            worst, failures = self._fuse_all()
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        if failures:
            raise RuntimeError('; '.join(failures))
        return (f'{len(FUSE_SPECS)} backbones x BN/SyncBN fused on {self.device} (float32, TF32 off): '
                f'max |diff| / max |output| {worst:.2g}')

    def _fuse_all(self) -> Tuple[float, List[str]]:
        """Worst relative difference over every backbone and norm, and the failures."""
        import copy

        import torch
        from torch.nn.modules.batchnorm import _BatchNorm

        import rep_backbones
        worst, failures = 0.0, []
        for spec in FUSE_SPECS:
            name, arch = spec.split(':')
            for norm in ('BN', 'SyncBN'):
                torch.manual_seed(0)
                model = rep_backbones.build_backbone(name, arch=arch, norm_cfg=dict(type=norm))
                for m in model.modules():   # statistics and affine parameters away from their init values
                    if isinstance(m, _BatchNorm):
                        m.running_mean.uniform_(-0.5, 0.5)
                        m.running_var.uniform_(0.5, 2.0)
                        m.weight.data.uniform_(0.5, 1.5)
                        m.bias.data.uniform_(-0.5, 0.5)
                model = model.to(self.device).eval()
                x = torch.randn(2, 3, 224, 224, device=self.device)
                try:
                    with torch.no_grad():
                        ref = model(x)
                        out = rep_backbones.fuse(copy.deepcopy(model))(x)
                except Exception as err:  # noqa: BLE001
                    failures.append(f'{spec} {norm}: {type(err).__name__}: {err}')
                    continue
                ref = ref if isinstance(ref, (tuple, list)) else (ref,)
                out = out if isinstance(out, (tuple, list)) else (out,)
                rel = max((a - b).abs().max().item() / a.abs().max().item() for a, b in zip(ref, out))
                worst = max(worst, rel)
                if rel > FUSE_RTOL:
                    failures.append(f'{spec} {norm}: max |diff| / max |output| {rel:.3g} > {FUSE_RTOL}')
        return worst, failures

    # -- 3./4. toy Mask R-CNN with SyncBN ----------------------------------------------------------
    def _toy_options(self, data: str) -> List[str]:
        ann = os.path.join(data, 'annotations', 'instances_{}2017.json')
        it = self.iters
        return ['--cfg-options', f'train_dataloader.dataset.data_root={data}/',
                f'val_dataloader.dataset.data_root={data}/', f'test_dataloader.dataset.data_root={data}/',
                f'val_evaluator.ann_file={ann.format("val")}',
                f'test_evaluator.ann_file={ann.format("val")}', f'train_cfg.max_iters={it}',
                f'train_cfg.val_interval={it}', f'default_hooks.checkpoint.interval={it}',
                'model.backbone.norm_cfg.type=SyncBN',
                # deterministic algorithms need CUBLAS_WORKSPACE_CONFIG on CUDA and cost speed; the
                # CPU toy runs keep them
                'randomness.deterministic=False']

    def _toy_data(self) -> str:
        root = str(self.work / 'toy_coco')
        self._run('toy-data', [sys.executable, 'detection/prepare_toy_coco.py', '--root', root,
                               '--num-train', '32', '--num-val', '8'])
        return root

    def train(self) -> str:
        if self.mmcv_ok is False:
            raise RuntimeError('not run: mmcv-ops failed (Mask R-CNN needs RoIAlign and NMS on CUDA)')
        data, work = self._toy_data(), self.work / 'train'
        log = self._run('train', ['bash', 'tools/dist_train.sh', DET_CFG, '1', '--work-dir', str(work),
                                  *self._toy_options(data)], env={'PORT': str(_free_port())})
        ckpt = work / f'iter_{self.iters}.pth'
        if not ckpt.is_file():
            raise RuntimeError(f'no checkpoint {ckpt.name} after training (log: {self.logs / "train.log"})')
        if 'SyncBN -> BN' in log:
            raise RuntimeError('the tools converted SyncBN to BN: the run did not train on CUDA')
        self.checkpoint = ckpt
        losses = re.findall(r'Iter\(train\).*?\sloss: ([0-9.na]+)', log)
        bbox = re.findall(r'coco/bbox_mAP: ([0-9.-]+)', log)
        return (f'{self.iters} iterations, SyncBN, 1 process (NCCL); last logged loss '
                f"{losses[-1] if losses else '?'}; validation bbox mAP {bbox[-1] if bbox else '?'}")

    def test(self) -> str:
        if self.checkpoint is None:
            raise RuntimeError('not run: no trained checkpoint (train failed or was skipped)')
        data = str(self.work / 'toy_coco')
        log = self._run('test', ['bash', 'tools/dist_test.sh', DET_CFG, str(self.checkpoint), '1',
                                 '--work-dir', str(self.work / 'test'), *self._toy_options(data)],
                        env={'PORT': str(_free_port())})
        diffs = re.findall(r'RepFuseHook: .*fused vs training form on the first batch: (max \|diff\| .*)', log)
        if not diffs:
            raise RuntimeError(f'RepFuseHook did not report its check (log: {self.logs / "test.log"})')
        bbox = re.findall(r'coco/bbox_mAP: ([0-9.-]+)', log)
        return f"RepFuseHook on CUDA with SyncBN kept: {diffs[0].strip()}; bbox mAP {bbox[-1] if bbox else '?'}"

    # -- 5. benchmark ------------------------------------------------------------------------------
    def bench(self, dtype: str, *formats: str) -> str:
        name = f'bench-{dtype}'
        out = self._run(name, [sys.executable, 'tools/benchmark.py',
                               *benchmark_args(dtype, formats, self.out_dir / 'benchmark')])
        table = [line for line in out.splitlines() if line.startswith('|')]
        self.tables[name] = '\n'.join(table)
        return f'RepGhostNet 1.0x, batch 8, 512x512: table below (JSON: benchmark/cuda_{dtype}.json)'


def benchmark_args(dtype: str, formats, out_dir: Path) -> List[str]:
    """tools/benchmark.py's arguments: RepGhostNet 1.0x, training form, fused, and the compiled fused model."""
    return ['--backbone', 'RepGhostNet:1.0x', '--variants', 'train', 'fused', '--memory-format', *formats,
            '--device', 'cuda', '--dtype', dtype, '--compile', '--shape', '512', '512', '--batch', '8',
            '--warmup', '3', '--rounds', '3', '--iters', '10', '--out-dir', str(out_dir), '--name', f'cuda_{dtype}']


def environment() -> Dict[str, str]:
    import torch
    env = dict(python=sys.version.split()[0], torch=torch.__version__, torch_cuda=str(torch.version.cuda),
               gpu=torch.cuda.get_device_name(0), capability='.'.join(map(str, torch.cuda.get_device_capability(0))))
    try:
        import mmcv
        env['mmcv'] = mmcv.__version__
    except Exception as err:  # noqa: BLE001
        env['mmcv'] = f'not importable: {err}'
    return env


def summary(env: Dict[str, str], rows: List[dict], tables: Dict[str, str]) -> str:
    lines = ['# GPU check', '', ', '.join(f'{k} {v}' for k, v in env.items()), '',
             '| step | result | seconds | details |', '|---|---|---|---|']
    for r in rows:
        details = r['details'].replace('|', '\\|').replace('\n', ' ')
        lines.append(f"| {r['step']} | {'ok' if r['ok'] else 'FAILED'} | {r['seconds']} | {details} |")
    for name, table in tables.items():
        lines += ['', f'## {name}', '', table]
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir).resolve()     # the tools run from the checkout's root
    message = no_cuda_message()
    if message is not None:
        print(message, file=sys.stderr)
        return 2
    check = Check(out_dir, args.iters)
    steps = {'mmcv-ops': check.mmcv_ops, 'fuse': check.fuse, 'train': check.train, 'test': check.test,
             'bench-float16': lambda: check.bench('float16', 'nchw', 'channels_last'),
             'bench-bfloat16': lambda: check.bench('bfloat16', 'channels_last')}
    t0 = time.perf_counter()
    try:
        for name in STEPS:
            if name not in args.skip:
                check.step(name, steps[name])
    finally:
        check.close()
    env = environment()
    text = summary(env, check.rows, check.tables)
    text += f'\ntotal {time.perf_counter() - t0:.0f} s\n'
    print(text)
    (out_dir / 'gpu_check.md').write_text(text)
    (out_dir / 'gpu_check.json').write_text(json.dumps(dict(environment=env, steps=check.rows), indent=2))
    return 0 if all(r['ok'] for r in check.rows) else 1


if __name__ == '__main__':
    sys.exit(main())
