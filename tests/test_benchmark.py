"""Official-style fused forms (rep_backbones.fusion.official_fused) and tools/benchmark.py: the
forms equal the training form and keep exactly the BatchNorms the official converters keep; the
tool's JSON has the expected columns, each row timed the form it names, and the JSON is written
atomically."""
from __future__ import annotations

import json
import os

import pytest
import torch
from timm.models.repghost import RepGhostModule

from rep_backbones import benchmark as bm
from rep_backbones.benchmark import cases as bm_cases
from rep_backbones.benchmark import tables as bm_tables
from rep_backbones.fusion import NoOfficialForm, official_fused
from rep_backbones.models import build_backbone, build_classifier
from tests.helpers import assert_fusion_exact, count_norms, keys_file, load_tool, randomize_bn, run_tool

pytestmark = [pytest.mark.slow, pytest.mark.deploy]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, 'configs', 'toy')
CLASSIFIER_HEADS = ('conv_head.', 'classifier.', 'head.')


benchmark_tool = load_tool('tools/benchmark.py')


def _reference_keys(name: str) -> dict:
    """``key -> shape`` of an official fused checkpoint, classifier head left out."""
    out = {}
    with open(keys_file(name)) as f:
        for line in f:
            key, shape = line.strip().split(' ', 1)
            if not key.startswith(CLASSIFIER_HEADS):
                out[key] = tuple(int(d) for d in shape.strip('()').split(',') if d.strip())
    return out


def _assert_equal_outputs(model, official, x):
    """The official form equals the training form: float64 algebra and float32 outputs."""
    assert_fusion_exact(model, official, x, official_fused)


# -- official fused forms ----------------------------------------------------------------------
@pytest.mark.parametrize('arch, keys', [('0.5x', 'repghostnet_0_5x'), ('1.0x', 'repghostnet_1_0x')])
def test_repghostnet_official_form(arch, keys):
    torch.manual_seed(0)
    model = randomize_bn(build_backbone('RepGhostNet', arch=arch, out_indices=(0, 1, 2, 3, 4))).eval()
    before = count_norms(model)
    official = official_fused(model)
    _assert_equal_outputs(model, official, torch.randn(1, 3, 67, 93))
    assert count_norms(model) == before, 'the training form must not be touched'
    # every conv+BN pair outside the RepGhost modules keeps its BN; each module loses two
    ghost = sum(isinstance(m, RepGhostModule) for m in model.modules())
    assert count_norms(official) == before - 2 * ghost
    # the official converter's key layout exactly (48 BNs in 1.0x, as the issue counted)
    sd = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert sd == _reference_keys(f'{keys}.fused_keys.txt')
    if arch == '1.0x':
        assert count_norms(official) == 48


@pytest.mark.parametrize('arch', ['M0', 'M1'])
def test_repnext_official_form(arch):
    torch.manual_seed(0)
    model = randomize_bn(build_backbone('RepNeXt', arch=arch)).eval()
    official = official_fused(model)
    _assert_equal_outputs(model, official, torch.randn(1, 3, 67, 93))
    # one standalone norm per block and per downsample survives, nothing else
    units = [n for n, m in model.named_modules() if hasattr(m, 'token_mixer')]   # blocks and downsamples
    norms = [n for n, m in official.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert sorted(norms) == sorted(f'{u}.norm' for u in units)
    chunk = official.stages[0].blocks[0].token_mixer
    assert isinstance(chunk.conv_i, torch.nn.Identity)          # identity chunk passed through
    assert [type(m).__name__ for m in (chunk.conv_s, chunk.conv_m)] == ['Conv2d', 'Conv2d']
    assert chunk.conv_s.kernel_size == (3, 3) and chunk.conv_m.kernel_size == (7, 7)
    sd = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert sd == _reference_keys(f'repnext_{arch.lower()}.fused_keys.txt')
    if arch == 'M0':
        assert count_norms(official) == 17


def test_repnext_classifier_official_form_equal():
    torch.manual_seed(0)
    model = randomize_bn(build_classifier('RepNeXt', arch='M0', num_classes=10)).eval()
    official = official_fused(model)
    _assert_equal_outputs(model, official, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize('name, arch', [('MobileNetV4', 'S'), ('RepGhostNetV2', 'S'), ('RepMobile', 'S'),
                                        ('RepNeXt', 'M0E')])
def test_no_official_form(name, arch):
    with pytest.raises(NoOfficialForm, match='no official fusion'):
        official_fused(build_backbone(name, arch=arch))


def test_official_form_refuses_fused_model():
    with pytest.raises(NoOfficialForm, match='already fused'):
        official_fused(build_backbone('RepGhostNet', arch='0.5x', deploy=True))


# -- the tool ----------------------------------------------------------------------------------
TINY = ['--shape', '64', '64', '--threads', '1', '--warmup', '1', '--rounds', '2', '--iters', '1']


@pytest.fixture
def timed_norms(monkeypatch):
    """What each benchmark case timed: ``{(model, variant or form, memory format or mode): (BatchNorms in the
    backbone, BatchNorms in the whole model)}``, read from the module the tool hands to the timer (or
    exports for onnxruntime)."""
    seen, current = {}, {}
    build_case, place, ort_case = bm_tables.build_case, bm_cases._place, bm_cases._ort_case

    def norms(module):
        backbone = next((m.backbone for m in module.modules() if hasattr(m, 'backbone')), module)
        return count_norms(backbone), count_norms(module)

    def tracked_build(case, settings):
        name = case.get('backbone') or os.path.splitext(os.path.basename(case.get('config', '')))[0]
        current['key'] = (name, case.get('variant', case.get('form')), case.get('mode', case.get('memory_format')))
        return build_case(case, settings)

    def tracked_place(model, *args):
        seen[current['key']] = norms(model)
        return place(model, *args)

    def tracked_ort(module, *args):
        seen[current['key']] = norms(module)
        return ort_case(module, *args)
    monkeypatch.setattr(bm_tables, 'build_case', tracked_build)     # where run_table looks it up
    monkeypatch.setattr(bm_cases, '_place', tracked_place)
    monkeypatch.setattr(bm_cases, '_ort_case', tracked_ort)
    return seen


def test_backbone_table_json(tmp_path, one_thread, timed_norms, capsys):
    rc = benchmark_tool.main(['--backbone', 'RepGhostNet:0.5x', 'MobileNetV4:S', *TINY,
                              '--out-dir', str(tmp_path), '--name', 'bb'])
    assert rc == 0
    data = json.loads((tmp_path / 'bb.json').read_text())
    assert data['kind'] == 'backbones' and data['settings']['shape'] == [64, 64]
    got = {(r['model'], r['variant'], r['memory_format']) for r in data['results']}
    expected = {(m, v, f) for m in ('RepGhostNet:0.5x', 'MobileNetV4:S') for f in ('nchw', 'channels_last')
                for v in ('train', 'official', 'fused')} | {(m, 'ort', 'nchw') for m in ('RepGhostNet:0.5x',
                                                                                       'MobileNetV4:S')}
    assert got == expected - {('MobileNetV4:S', 'official', f) for f in ('nchw', 'channels_last')}
    # each row timed what its label says: the training form with its BatchNorms, the official form with
    # fewer (the ones the official converter keeps), the fused form and its ONNX export with none
    assert set(timed_norms) == got
    for (model, variant, fmt), (norms, _) in timed_norms.items():
        train = timed_norms[(model, 'train', fmt)][0]
        assert {'train': norms > 0, 'official': 0 < norms < train, 'fused': norms == 0, 'ort': norms == 0}[variant], \
            (model, variant, fmt, norms)
    assert any('MobileNetV4' in k and 'no official fusion' in v for k, v in data['notes'].items())
    for r in data['results']:
        assert r['n'] == 2 and 0 < r['min_ms'] <= r['median_ms'] <= r['p90_ms']
        assert r['speedup_vs_train'] > 0
    summary = {(e['model'], e['memory_format']): e for e in data['summary']}
    rg = summary[('RepGhostNet:0.5x', 'nchw')]
    rows = {(r['model'], r['variant'], r['memory_format']): r for r in data['results']}
    assert rg['fused/official'] == pytest.approx(rows[('RepGhostNet:0.5x', 'fused', 'nchw')]['median_ms'] /
                                                 rows[('RepGhostNet:0.5x', 'official', 'nchw')]['median_ms'])
    assert rg['goal'].startswith('fused/official') and isinstance(rg['goal_met'], bool)
    assert rg['fused/official (fastest)'] == pytest.approx(rows[('RepGhostNet:0.5x', 'fused', 'nchw')]['min_ms'] /
                                                           rows[('RepGhostNet:0.5x', 'official', 'nchw')]['min_ms'])
    assert isinstance(rg['goal_met_fastest'], bool)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| RepGhostNet:0.5x | nchw')]
    assert len(printed) == 1 and f"{rg['fused/official (fastest)']:.2f}x" in printed[0], printed
    assert printed[0].rstrip(' |').endswith(('met; met', 'met; NOT met')), printed
    mn = summary[('MobileNetV4:S', 'channels_last')]
    assert 'fused/official' not in mn and mn['goal'].startswith('train/fused') and 'fused/train' in mn
    assert set(data['fuse_seconds']) == {'RepGhostNet:0.5x', 'MobileNetV4:S'}
    assert data['environment']['device'] == 'cpu' and data['environment']['threads'] == 1   # deploy.report's record
    assert (tmp_path / 'bb.png').stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bb.json', 'bb.png']   # no temporary files left


def test_whole_model_table_json(tmp_path, one_thread, timed_norms):
    names = ('toy_retinanet_repghost_1_0x.py', 'toy_fpn_repghost_1_0x_ade20k.py')
    configs = [os.path.join(TOY, name) for name in names]
    rc = benchmark_tool.main(['--configs', *configs, *TINY, '--out-dir', str(tmp_path), '--name', 'models'])
    assert rc == 0
    data = json.loads((tmp_path / 'models.json').read_text())
    assert data['kind'] == 'models'
    got = {(r['model'], r['form'], r['mode']) for r in data['results']}
    labels = ('toy_retinanet_repghost_1_0x', 'toy_fpn_repghost_1_0x_ade20k')
    forms = ('train', 'fused', 'fused_whole')
    assert got == {(m, f, mode) for m in labels for f in forms for mode in ('tensor', 'predict')} | {
        (m, 'ort', 'tensor') for m in labels}
    # each row timed what its label says: BatchNorms in the training form's backbone, none in the fused
    # backbone, none anywhere in the whole-fused model
    assert set(timed_norms) == got
    for (model, form, mode), (backbone, everywhere) in timed_norms.items():
        assert {'train': backbone > 0, 'fused': backbone == 0, 'ort': backbone == 0,
                'fused_whole': everywhere == 0}[form], (model, form, mode, backbone, everywhere)
    for r in data['results']:
        assert r['n'] == 2 and 0 < r['median_ms'] <= r['p90_ms'] and r['speedup_vs_train'] > 0
        assert r['memory_format'] == 'nchw'
        if r['mode'] == 'tensor':
            assert r['part'] == 'full'
        if r['form'] != 'train':
            assert r['fuse_s'] > 0
    assert (tmp_path / 'models.png').stat().st_size > 1000


def test_training_table(one_thread):
    settings = bm.Settings(shape=(64, 64), batch=1, threads=1, warmup=1, rounds=1, iters=1)
    data = bm.benchmark_training([os.path.join(TOY, 'toy_retinanet_repghost_1_0x.py')], settings, memory=False,
                                 classifier_pairs=[('RepGhostNet:0.5x', 'repghostnet_050')])
    rows = {(r['model'], r['form']): r for r in data['results']}
    det = 'toy_retinanet_repghost_1_0x'
    assert (det, 'train') in rows
    # every case ran: a case that fails is only noted in the JSON, so a note is a failure here
    assert not data['notes'], data['notes']
    assert (det, 'with_cp') in rows
    ours, timm_form = rows[('RepGhostNet:0.5x classifier', 'train')], rows[('RepGhostNet:0.5x classifier',
                                                                            'timm repghostnet_050')]
    assert ours['params'] == timm_form['params']          # the same blocks: same parameter count
    assert timm_form['speedup_vs_train'] == pytest.approx(ours['median_ms'] / timm_form['median_ms'])
    repeat = rows[('RepGhostNet:0.5x classifier', 'train, repeated')]     # the noise-floor control
    assert repeat['params'] == ours['params']
    assert repeat['speedup_vs_train'] == pytest.approx(ours['median_ms'] / repeat['median_ms'])


def test_peak_memory_probe_grows_with_input():
    """Peak memory, measured in a subprocess per case, sees the activations: batch 2 at 384x384
    needs more than batch 1 at 32x32 (the fused RepGhostNet 0.5x stem map alone is 9 MiB)."""
    case = dict(backbone='RepGhostNet:0.5x', variant='fused', memory_format='nchw')
    small = bm.measure_memory_in_subprocess(case, bm.Settings(shape=(32, 32), batch=1, threads=1), calls=1)
    large = bm.measure_memory_in_subprocess(case, bm.Settings(shape=(384, 384), batch=2, threads=1), calls=1)
    assert small['memory_method'] == large['memory_method']
    assert large['peak_mib'] > small['peak_mib'] + 4, (small, large)
    assert small['resident_mib'] > 0


def test_json_written_atomically(tmp_path, monkeypatch, one_thread):
    """A result that cannot be serialised (json.dump fails half-way) leaves the previous file."""
    (tmp_path / 'run.json').write_text('{"previous": true}')
    monkeypatch.setattr(benchmark_tool.bm, 'benchmark_backbones',
                        lambda *a, **k: dict(kind='backbones', results=[{'median_ms': 1.0, 'bad': object()}]))
    with pytest.raises(TypeError):
        benchmark_tool.main(['--backbone', 'RepGhostNet:0.5x', *TINY, '--out-dir', str(tmp_path), '--name', 'run'])
    assert json.loads((tmp_path / 'run.json').read_text()) == {'previous': True}
    assert [p.name for p in tmp_path.iterdir()] == ['run.json']


def test_tool_help():
    with pytest.raises(SystemExit) as exit_info:
        benchmark_tool.parse_args(['--help'])
    assert exit_info.value.code == 0


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(SystemExit, match='float16 is meant for CUDA'):
        benchmark_tool.main(['--backbone', 'RepGhostNet:0.5x', '--dtype', 'float16', '--out-dir', str(tmp_path)])
    with pytest.raises(ValueError, match="unknown name 'NoSuchNet'"):
        benchmark_tool.main(['--backbone', 'NoSuchNet:1', *TINY, '--out-dir', str(tmp_path)])
    with pytest.raises(FileNotFoundError, match='no_such_config.py'):
        benchmark_tool.main(['--configs', 'no_such_config.py', *TINY, '--out-dir', str(tmp_path)])


def test_old_variant_name_is_named(capsys):
    """The official fused form was once the variant 'upstream': asking for it names the new word."""
    with pytest.raises(ValueError, match="'upstream' is now called 'official'"):
        bm.benchmark_backbones(['RepGhostNet:0.5x'], bm.Settings(shape=(64, 64)), variants=['upstream'])
    with pytest.raises(SystemExit) as exit_info:
        benchmark_tool.parse_args(['--backbone', 'RepGhostNet:0.5x', '--variants', 'upstream'])
    assert exit_info.value.code == 2 and "'official'" in capsys.readouterr().err


def test_classifier_pairs_option(tmp_path, monkeypatch, capsys):
    """``--classifiers-only`` times no detector; ``--classifier-pairs`` picks the pairs; both refused without
    ``--train-memory``, and a pair without ``=`` is named."""
    seen = {}

    def fake_training(configs, settings, memory, classifier_pairs):
        seen.update(configs=list(configs), pairs=list(classifier_pairs))
        return dict(kind='training', results=[])
    monkeypatch.setattr(benchmark_tool.bm, 'benchmark_training', fake_training)
    monkeypatch.setattr(benchmark_tool, 'plot', lambda result, path: None)
    monkeypatch.setattr(benchmark_tool, 'markdown', lambda result: '')
    benchmark_tool.main(['--train-memory', '--classifiers-only', '--classifier-pairs',
                         'RepGhostNet:1.3x=repghostnet_130', *TINY, '--out-dir', str(tmp_path)])
    assert seen == dict(configs=[], pairs=[('RepGhostNet:1.3x', 'repghostnet_130')])
    benchmark_tool.main(['--train-memory', *TINY, '--out-dir', str(tmp_path)])
    assert seen['configs'] == list(benchmark_tool.DEFAULT_TRAIN_CONFIGS)
    assert seen['pairs'] == list(benchmark_tool.bm.OFFICIAL_TRAIN_PAIRS)
    for argv, message in ((['--backbone', 'RepGhostNet:0.5x', '--classifiers-only'], 'go with --train-memory'),
                          (['--train-memory', '--classifier-pairs', 'RepGhostNet:1.3x'], 'expected OURS=TIMM')):
        with pytest.raises(SystemExit) as exit_info:
            benchmark_tool.parse_args(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_deploy_layouts_tool_tables():
    """``tools/analysis/deploy_layouts.py`` on a small odd input: every section prints its table; every layout it
    times as exact equals the training form, and the one it labels NOT exact (RepMobile without the border
    correction) is measurably off, so the check it prints can tell the two apart."""
    result = run_tool('tools/analysis/deploy_layouts.py', '--shape', '33', '47', '--rounds', '1', '--threads', '1',
                      '--headroom', 'RepGhostNetV2:S', '--repnext', 'RepNeXt:M0', env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in result.stdout.splitlines()
            if line.startswith('| ') and not line.startswith('| backbone')]
    headroom = [r for r in rows if r[0] == 'RepGhostNetV2:S' and len(r) == 10]
    assert [r[1] for r in headroom] == ['nchw', 'channels_last']
    for r in headroom:
        conv, bn, _ = [float(v.rstrip('%')) for v in r[3:6]]
        assert conv > 0 and bn > 0, r          # the profiled training form runs BatchNorm ops
        assert r[8].count('%') == 2, r                            # the fused form's conv / other split
    layouts = [r for r in rows if len(r) == 6]
    assert {r[0] for r in layouts} == {'RepNeXt:M0', 'RepMobile:S'}
    for r in layouts:
        error = float(r[5])
        assert (error > 1e-2) if 'NOT exact' in r[2] else (error < 1e-3), r   # RepMobile's float32: ~3e-4
    assert sum('NOT exact' in r[2] for r in layouts) == 2       # both memory formats
    pointwise = [r for r in rows if len(r) == 5]
    assert [r[0] for r in pointwise] == ['RepGhostNetV2:S'] and float(pointwise[0][4]) < 1e-3   # --headroom's list
