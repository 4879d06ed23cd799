"""The package version, in one place: read by pyproject.toml (setuptools' ``attr:``, without
importing the package) and re-exported as ``rep_backbones.__version__``."""
__version__ = '0.2.0.dev0'
