"""rep_backbones: re-parameterizable CNN backbones for mmdetection 3.x / mmsegmentation 1.x.

The package metadata is in ``pyproject.toml``; this file adds only the ``.mim`` handling below.

Like OpenMMLab packages, the installed package carries its configs and tools in
``rep_backbones/.mim`` so that ``mim train/test/run rep_backbones ...`` finds them (mim looks in
``<site-packages>/rep_backbones/.mim``):

* wheel / regular install: ``rep_backbones/.mim`` is committed as relative symlinks (to
  ``configs/``, ``tools/`` and ``model-index.yml``); building the wheel copies what they point to.
* editable install (``pip install -e .``, PEP 660): mmdet's recipe creates nothing there. Here the
  editable wheel puts the repository root on ``sys.path`` (setuptools' "compat" mode, what
  ``setup.py develop`` did) and adds ``<site-packages>/rep_backbones/.mim/`` holding one-line
  stand-ins: each config inherits the checkout's file (``_base_ = ['/checkout/configs/x.py']``) and
  each tool runs the checkout's script, and ``model-index.yml`` imports the checkout's model index
  (for ``mim search``), so edits are live. That folder has no ``__init__.py``, so
  ``import rep_backbones`` still resolves to the checkout. Re-install after adding a config or tool.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.editable_wheel import editable_wheel


class _MimStandIns:
    """Wraps setuptools' editable strategy: also writes the ``.mim`` stand-ins into the wheel."""

    def __init__(self, inner, root: Path):
        self.inner, self.root = inner, root

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)

    def __call__(self, wheel, files, mapping):
        self.inner(wheel, files, mapping)
        for path in sorted((self.root / 'configs').rglob('*.py')):
            rel = path.relative_to(self.root / 'configs').as_posix()
            wheel.writestr(f'rep_backbones/.mim/configs/{rel}',
                           f'# editable install of rep_backbones: the checkout\'s config\n_base_ = [{str(path)!r}]\n')
        for path in sorted((self.root / 'tools').rglob('*.py')):
            rel = path.relative_to(self.root / 'tools').as_posix()
            wheel.writestr(f'rep_backbones/.mim/tools/{rel}',
                           '# editable install of rep_backbones: run the checkout\'s script\n'
                           f'import runpy, sys\nsys.argv[0] = {str(path)!r}\n'
                           f'runpy.run_path({str(path)!r}, run_name="__main__")\n')
        index = self.root / 'model-index.yml'
        wheel.writestr('rep_backbones/.mim/model-index.yml',
                       f'# editable install of rep_backbones: the checkout\'s model index\nImport:\n  - {index}\n')


class EditableWithMim(editable_wheel):
    def _select_strategy(self, name, tag, build_lib):
        self.mode = 'compat'   # repository root on sys.path: the checkout's package wins over .mim/
        return _MimStandIns(super()._select_strategy(name, tag, build_lib), Path(self.project_dir).resolve())


setup(cmdclass={'editable_wheel': EditableWithMim})
