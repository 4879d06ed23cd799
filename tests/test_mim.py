"""The mim model zoo and the packaging: ``model-index.yml`` and ``configs/<family>/metafile.yml`` list
every family config with numbers this package computes; ``mim search rep_backbones`` finds them from
the editable install and from a wheel; the wheel carries ``.mim``, the license files and the version
of ``rep_backbones/version.py``."""
import glob
import json
import os
import sys
import zipfile

import pytest
import torch
import yaml

import rep_backbones
from rep_backbones.io.build import build_model_from_config

from .helpers import ROOT, build_wheel, load_tool, require_mim, run, run_ok

pytestmark = [pytest.mark.slow, pytest.mark.mm, pytest.mark.tools]

METAFILES = sorted(glob.glob(os.path.join(ROOT, 'configs', '*', 'metafile.yml')))
SCRIPT = load_tool('tools/analysis/make_metafiles.py')


def _models():
    """name -> (family folder, entry) over every metafile."""
    out = {}
    for path in METAFILES:
        family = os.path.basename(os.path.dirname(path))
        for entry in yaml.safe_load(open(path))['Models']:
            assert entry['Name'] not in out, f"{entry['Name']} listed twice"
            out[entry['Name']] = (family, entry)
    return out


def _build_outputs_in_checkout():
    """What a setuptools build in the checkout leaves there: build/ and *.egg-info."""
    return {p for p in (*ROOT.glob('build'), *ROOT.glob('*.egg-info'), *ROOT.glob('rep_backbones/*.egg-info'))}


def _search(*args, env=None, cwd=None, tmp_path):
    """``mim search rep_backbones ARGS --json``: {config id: {field: value}} (empty fields left out)."""
    out = tmp_path / f'search{len(list(tmp_path.glob("search*.json")))}.json'
    log = run_ok([require_mim(), 'search', 'rep_backbones', *args, '--json', out], cwd=cwd or tmp_path, env=env,
                 timeout=300)
    assert out.is_file(), log
    rows = {}
    for field, column in json.load(open(out)).items():   # pandas' to_json: {field: {config id: value}}
        for name, value in column.items():
            row = rows.setdefault(name, {})
            if value is not None:
                row[field] = value
    return rows


def test_model_index_imports_every_metafile():
    index = yaml.safe_load(open(os.path.join(ROOT, 'model-index.yml')))
    assert sorted(index['Import']) == [os.path.relpath(p, ROOT).replace(os.sep, '/') for p in METAFILES]
    assert set(SCRIPT.FAMILIES) <= {os.path.basename(os.path.dirname(p)) for p in METAFILES}


def test_metafiles_list_every_family_training_config():
    models = _models()
    for family in SCRIPT.FAMILIES:
        listed = sorted(os.path.join(ROOT, e['Config']) for f, e in models.values() if f == family)
        assert listed == [str(p) for p in SCRIPT.training_configs(family)], family
    for name, (family, entry) in models.items():
        assert entry['Config'] == f'configs/{family}/{name}.py'
        assert entry['In Collection'] == SCRIPT.FAMILIES[family]['Name']
        # a paper's number is marked as such; a config with no published run has none
        assert ('Results' in entry) == (entry['Metadata'].get('Results Source') == SCRIPT.RESULTS_SOURCE)
    for path in METAFILES:
        for collection in yaml.safe_load(open(path))['Collections']:
            assert os.path.isfile(os.path.join(ROOT, collection['README'])), collection['README']


@pytest.mark.parametrize('family', sorted(SCRIPT.FAMILIES))
def test_metafile_entry_is_what_the_script_computes(family):
    """The numbers in the metafile are the ones the script counts now (re-run it after a change to a
    config or a model): checked on each family's first Semantic FPN config (512x512, the fastest)."""
    name = next(p.stem for p in SCRIPT.training_configs(family) if p.stem.startswith('fpn_'))
    torch.manual_seed(0)   # the backbones are built with random weights (only their shapes count)
    _, entry = _models()[name]
    path = os.path.join(ROOT, entry['Config'])
    names = SCRIPT.FAMILIES[family]
    expected = SCRIPT.model_entry(SCRIPT.Path(path), names['Name'], names['Pretrained'])
    assert entry == expected


def test_mim_search_from_the_editable_install(tmp_path):
    """The editable install's .mim/model-index.yml imports the checkout's: every model is listed, and
    mim's filters work on the fields (paper numbers under coco/..., ade20k/...)."""
    require_mim()
    import mim.utils
    installed = mim.utils.get_installed_path('rep_backbones')
    assert os.path.isfile(os.path.join(installed, '.mim', 'model-index.yml')), \
        f'{installed}/.mim has no model-index.yml: re-install (pip install --no-deps --no-build-isolation -e .)'
    models = _models()
    found = _search(tmp_path=tmp_path)
    assert set(found) == set(models)
    repnext = _search('--model', 'repnext', '--field', 'coco/box_ap', 'coco/mask_ap', 'weight', tmp_path=tmp_path)
    # mim leaves out the rows with none of the fields: the RetinaNet configs (no paper run, no trained weights)
    assert set(repnext) == {n for n, (f, m) in models.items() if f == 'repnext' and ('Results' in m or 'Weights' in m)}
    mask_m3 = repnext['mask-rcnn_repnext-m3_fpn_1x_coco']
    assert set(mask_m3) == {'coco/box_ap', 'coco/mask_ap', 'weight'}
    assert mask_m3['coco/box_ap'] == models['mask-rcnn_repnext-m3_fpn_1x_coco'][1]['Results'][0]['Metrics']['box AP']
    # the README's second filter: fields with a unit, asked for without it
    sizes = _search('--model', 'repghostnet', '--field', 'backbone_params', 'backbone_flops', tmp_path=tmp_path)
    one = sizes['retinanet_repghostnet-1.3x_fpn_1x_coco']
    assert set(one) == {'backbone_params(M)', 'backbone_params_fused(M)', 'backbone_flops(G)'}, one
    meta = models['retinanet_repghostnet-1.3x_fpn_1x_coco'][1]['Metadata']
    assert one['backbone_params(M)'] == meta['Backbone Params (M)']
    assert one['backbone_flops(G)'] == meta['Backbone FLOPs (G)']


# Python without the checkout on sys.path (the editable install's .pth file puts it there, and with it the
# repository-only detection/ and segmentation/ folders): what an environment with only the wheel sees.
# Arguments: the checkout, then a script or ``-m MODULE``, then its arguments.
WITHOUT_CHECKOUT = '''
import os, runpy, sys
root = os.path.realpath(sys.argv.pop(1))
sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != root]
if sys.argv[1] == '-m':
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name='__main__')
'''


def test_wheel_carries_the_zoo_and_the_deploy_path(tmp_path):
    """The wheel (built from a copy of the source tree: nothing is written into the checkout) carries
    ``.mim``, the license files and the version; mim, pointed at the installed wheel, lists every model; and
    the installed wheel alone (no checkout on the path) makes the toy data and runs ``tools/deploy.py``."""
    require_mim()
    before = _build_outputs_in_checkout()
    wheel = build_wheel(tmp_path / 'build')
    assert _build_outputs_in_checkout() <= before, 'the wheel build wrote into the checkout'
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = f'rep_backbones-{rep_backbones.__version__}.dist-info'
    assert wheel.name.startswith(f'rep_backbones-{rep_backbones.__version__}-')
    assert {f'{dist_info}/licenses/LICENSE', f'{dist_info}/licenses/NOTICE', 'rep_backbones/version.py',
            'rep_backbones/.mim/model-index.yml', 'rep_backbones/.mim/configs/mask_rcnn_repghost_1_3x.py',
            'rep_backbones/.mim/tools/train.py'} <= names
    for path in METAFILES:
        rel = os.path.relpath(path, os.path.join(ROOT, 'configs')).replace(os.sep, '/')
        assert f'rep_backbones/.mim/configs/{rel}' in names

    target = tmp_path / 'site'
    run_ok([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', target, wheel], timeout=300)
    env = {'PYTHONPATH': str(target)}
    proc = run([sys.executable, '-c', 'from mim.utils import get_installed_path as g; print(g("rep_backbones"))'],
               env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where = proc.stdout.split()[-1]
    assert where == str(target / 'rep_backbones')   # mim reads the wheel's copy, not the checkout
    assert set(_search(env=env, tmp_path=tmp_path)) == set(_models())
    where = run_ok([sys.executable, '-c', 'import rep_backbones; print(rep_backbones.__file__)'], env=env,
                   cwd=tmp_path).split()[-1]
    assert where == str(target / 'rep_backbones' / '__init__.py')   # Python, too, imports the wheel's copy
    # the toy data generators ship in the wheel: the demo's data is made without a checkout
    run_ok([sys.executable, '-c', WITHOUT_CHECKOUT, ROOT, '-m', 'rep_backbones.toy_data', 'coco', '--root',
            'data/toy_coco', '--num-train', '2', '--num-val', '1', '--size', '64', '80'], env=env, cwd=tmp_path)
    coco = json.loads((tmp_path / 'data' / 'toy_coco' / 'annotations' / 'instances_train2017.json').read_text())
    assert len(coco['images']) == 2 and coco['annotations']
    # ... and the whole deploy path runs from the wheel: the tool and config as it ships them (.mim), the toy
    # data above, fuse, export, INT8, verify, score and time, the card
    shipped = target / 'rep_backbones' / '.mim'
    toy_cfg = shipped / 'configs' / 'toy' / 'toy_retinanet_repghost_1_0x.py'
    torch.manual_seed(0)
    torch.save({'state_dict': build_model_from_config(str(toy_cfg)).state_dict()}, tmp_path / 'random.pth')
    run_ok([sys.executable, '-c', WITHOUT_CHECKOUT, ROOT, shipped / 'tools' / 'deploy.py', toy_cfg, 'random.pth',
            '--work-dir', 'deployed',
            '--backend', 'onnxruntime', '--precision', 'int8', '--calib-n', '1', '--rounds', '1', '--time-n', '1'],
           env={**env, 'OMP_NUM_THREADS': '1'}, cwd=tmp_path)
    card = json.loads((tmp_path / 'deployed' / 'toy_retinanet_repghost_1_0x_onnxruntime_int8' / 'report.json')
                      .read_text())
    assert card['artifact'] == 'model.int8.onnx'
    assert {'training form (mmdet)', 'fused PyTorch', 'deployed fp32', 'deployed INT8'} == set(card['forms'])
