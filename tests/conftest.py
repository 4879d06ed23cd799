"""Every test starts from the same random state, whatever ran before it (order-independent draws of
weights, inputs and BN statistics), torch uses one thread per test process unless told otherwise, and
no test leaves the thread count or a checkout folder on ``sys.path`` changed for the tests after it.
mm packages' metafiles are read once per test process (:func:`_metafiles_read_once`)."""
import functools
import os
import random
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))


@pytest.fixture(scope='session', autouse=True)
def _metafiles_read_once():
    """mmengine resolves every ``mmdet::`` / ``mmseg::`` base of a config by reading all ~500 metafiles of
    that package (``mmengine.config.utils._get_cfg_metainfo``), about 2 s per config file. The files do not
    change during a run: within the suite, each is parsed once (``mmengine.config.utils.load``, wrapped
    for the installed packages' ``.mim`` YAML files only; nothing mutates the parsed dicts)."""
    try:
        from mmengine.config import utils
    except ImportError:          # the pure-PyTorch tests run without mm
        yield
        return
    read = utils.load

    @functools.lru_cache(maxsize=None)
    def read_metafile(path):
        return read(path)

    def load(file, *args, **kwargs):
        if not args and not kwargs and isinstance(file, str) and f'{os.sep}.mim{os.sep}' in file \
                and file.endswith('.yml'):
            return read_metafile(file)
        return read(file, *args, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utils, 'load', load)
        yield


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_leaked_state():
    """A test that changes torch's thread count or puts a folder of the checkout on ``sys.path`` must undo
    it (use :func:`one_thread`, ``monkeypatch.syspath_prepend`` or ``tests.helpers.load_tool``): restored
    here, and reported. (Folders of installed packages are left alone: some packages add their own on
    first import, e.g. onnxruntime's quantizer, and need them afterwards.)"""
    threads, path = torch.get_num_threads(), set(sys.path)
    yield
    leaked = []
    if torch.get_num_threads() != threads:
        leaked.append(f'torch threads {threads} -> {torch.get_num_threads()}')
        torch.set_num_threads(threads)
    added = [p for p in sys.path if p not in path and os.path.abspath(p or '.').startswith(ROOT)
             and not os.path.abspath(p).startswith(sys.prefix)]      # a .venv in the checkout: packages' own
    if added:
        leaked.append(f'sys.path: {added} added')
        sys.path[:] = [p for p in sys.path if p not in added]
    if leaked:
        pytest.fail('the test left shared state changed: ' + '; '.join(leaked), pytrace=False)


@pytest.fixture
def one_thread():
    """One torch intra-op thread during the test (small CPU convs gain little from more, and on a busy
    machine spinning OpenMP threads make them many times slower); the previous count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The longest test files (minutes each: training, tool subprocesses), started first: pytest-xdist's
# ``--dist loadfile`` hands files to the workers in collection order, so a long file collected last would
# run alone at the end while the other worker idles. Order only; the results do not depend on it.
LONGEST_FIRST = ('test_pipeline.py', 'test_demo.py', 'test_deploy.py', 'test_zoo.py', 'test_backbone_contract.py',
                 'test_mmdeploy.py', 'test_quantize.py', 'test_resume.py')


def pytest_collection_modifyitems(config, items):
    """Long files first (:data:`LONGEST_FIRST`). ``REP_BACKBONES_TEST_ORDER=reverse`` runs the suite backwards:
    with seeded tests, the result must not depend on what ran before (run both orders before a landing)."""
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)        # stable: collection order within a file and among the other files
    if os.environ.get('REP_BACKBONES_TEST_ORDER') == 'reverse':
        items.reverse()
