"""Counting (``rep_backbones.complexity``) against the papers' published figures (each family file's
``PAPER_TABLE``), and ``tools/analysis/complexity.py``."""
from __future__ import annotations

import pytest

from rep_backbones import complexity
from rep_backbones.complexity import matches, paper_tables, parse_figure
from rep_backbones.models import CLASSIFIERS

from .helpers import run_tool

pytestmark = pytest.mark.usefixtures('one_thread')


def test_paper_figures():
    assert parse_figure('4,073,604') == (4_073_604, 0)
    value, tol = parse_figure('142.39M')
    assert value == pytest.approx(142.39e6) and tol == pytest.approx(0.005e6)
    assert matches(142_394_999, '142.39M') and not matches(142_395_001, '142.39M')
    assert matches(4_073_604, '4,073,604') and not matches(4_073_605, '4,073,604')
    with pytest.raises(ValueError, match="bad paper figure '4.1 MB'"):
        parse_figure('4.1 MB')


def test_every_paper_table_is_well_formed():
    """Every figure parses and every variant is one of the family's: a typo fails here, with its place."""
    assert set(paper_tables()) == set(CLASSIFIERS)
    for family, table in paper_tables().items():
        assert table['source'] and table['note'], family
        for variant, figures in table['variants'].items():
            CLASSIFIERS[family].resolve_arch(variant)
            for key, figure in figures.items():
                if key != 'input':
                    assert key in {c[0] for c in complexity.COLUMNS}, (family, variant, key)
                    parse_figure(figure)


def test_repghost_complexity_against_paper():
    res = complexity.classifier_complexity('RepGhostNet:1.0x')
    assert res['train_params'] == 4_073_604
    assert res['official_deploy_params'] == 4_058_772        # what the paper counted (4.1 M)
    assert res['fused_params'] == 4_051_648                  # ours: conv+BN folded too
    assert matches(res['fused_macs'], '142.39M') and matches(res['fused_macs'], '142M')
    assert res['train_macs'] == res['fused_macs']


@pytest.mark.parametrize('family', sorted(CLASSIFIERS))
def test_registered_families_against_paper(family):
    """Training-form params are exact paper counts (same architecture); the inference form's MACs
    are within 0.5 % (a fuller fusion may change kernel shapes slightly)."""
    variant = next(iter(CLASSIFIERS[family].paper_table['variants']))
    (row,) = complexity.paper_table_rows(family, [variant])
    paper, ours = row['paper'], row['ours']
    if 'train_params' in paper:
        assert row['match']['train_params'], (ours['train_params'], paper['train_params'])
    value, _ = parse_figure(paper['macs'])
    assert abs(ours['fused_macs'] - value) <= 0.005 * value, (ours['fused_macs'], paper['macs'])
    assert f'| {variant} |' in complexity.format_paper_table(family, [row])


def test_paper_table_markdown():
    md = complexity.paper_tables_markdown(['RepGhostNet'], ['1.0x'])
    assert '4,073,604 / 4,073,604 ✓' in md
    assert '4,058,772 / 4,058,772 ✓' in md
    assert '4,051,648' in md
    assert 'ARCHITECTURES.md' not in md       # cites sources the repository names, not private notes
    with pytest.raises(ValueError, match="unknown classifier families \\['Nope'\\]"):
        complexity.paper_tables_markdown(['Nope'])


@pytest.mark.slow           # a whole tool
def test_complexity_cli_paper_tables():
    """The command line, run in this process (tests.helpers.run_tool; that it starts as a script without
    PYTHONPATH is test_tools_deploy.py's ``test_tools_help``)."""
    result = run_tool('tools/analysis/complexity.py', '--paper-tables', '--family', 'RepGhostNet', '--variants', '1.0x',
                      env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    assert '4,073,604 / 4,073,604 ✓' in result.stdout
