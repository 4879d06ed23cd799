"""The mm layer: registration, init_cfg bridge, safe checkpoint loading, RepFuseHook (mmengine Runner)."""
import copy
import os

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import HOOKS, MODELS
from mmengine.runner import Runner
from torch.utils.data import Dataset

import rep_backbones
from rep_backbones.checkpoint import UntrustedCheckpointError, read_checkpoint
from rep_backbones.fusion import find_rep_backbones
from rep_backbones.mm import RepFuseHook
from rep_backbones.models import RepGhostNet

from .helpers import count_norms, randomize_bn

pytestmark = pytest.mark.mm


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_backbones_build_from_mmdet_and_mmseg_registries(scope):
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    for name in rep_backbones.models.BACKBONES:
        assert registry.get(name) is rep_backbones.models.BACKBONES[name]
    model = registry.build(dict(type='RepGhostNet', arch='0.5x', out_indices=(1, 3)))
    assert model.out_channels == [20, 80]
    scoped = registry.build(dict(type='rep_backbones.RepGhostNet', arch='0.5x'))
    assert isinstance(scoped, RepGhostNet)
    hooks = __import__(f'{scope}.registry', fromlist=['HOOKS']).HOOKS
    assert hooks.get('RepFuseHook') is RepFuseHook


def test_a_short_name_taken_in_the_root_registry_is_left_to_its_owner():
    """Registration never overwrites another package's name (no ``force=True``): the short name stays
    with its owner, with a warning, and the scoped name builds this package's class."""
    from mmengine.registry import Registry

    from rep_backbones.mm.registry import register
    root = Registry('toy model')
    scoped = Registry('toy model', parent=root, scope='rep_backbones')

    class TheirNet(torch.nn.Module):
        pass

    root.register_module(name='RepGhostNet', module=TheirNet)
    assert not register(RepGhostNet, 'RepGhostNet', scoped=scoped, root=root)
    assert root.get('RepGhostNet') is TheirNet
    assert scoped.get('rep_backbones.RepGhostNet') is RepGhostNet
    assert register(RepGhostNet, 'RepGhostNet', scoped=scoped, root=root) is False  # idempotent
    assert register(RepGhostNet, 'OurNet', scoped=scoped, root=root)
    assert root.get('OurNet') is RepGhostNet


def test_non_pretrained_init_cfg_goes_to_mmengine():
    model = MODELS.build(dict(type='RepGhostNet', arch='0.5x', init_cfg=dict(type='Constant', layer='Conv2d', val=0.5)))
    model.init_weights()
    assert torch.all(model.conv_stem.weight == 0.5)


# -- a tiny mmengine task around a RepGhostNet backbone -----------------------------------------------
class TinyClassifier(BaseModel):
    def __init__(self):
        super().__init__()
        self.backbone = RepGhostNet('0.5x', out_indices=(3,))
        self.head = torch.nn.Linear(80, 2)

    def forward(self, inputs, labels=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        logits = self.head(self.backbone(inputs)[0].mean((2, 3)))
        if mode == 'loss':
            labels = torch.stack(labels) if isinstance(labels, list) else labels
            return dict(loss=torch.nn.functional.cross_entropy(logits, labels))
        if mode == 'predict':
            return [logit for logit in logits]
        return logits


class NoiseSet(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 37, 45, generator=gen), labels=torch.tensor(i % 2))


class MeanLogit(BaseMetric):
    """Sensitive to every output value: the mean and max of the logits."""

    def process(self, data_batch, data_samples):
        self.results.extend(data_samples)

    def compute_metrics(self, results):
        stacked = torch.stack(results)
        return dict(mean=stacked.mean().item(), max=stacked.max().item())


def _runner(work_dir, hooks, max_epochs=2, **kwargs):
    loader = dict(dataset=NoiseSet(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=4,
                  num_workers=0)
    return Runner(model=TinyClassifier(), work_dir=str(work_dir), train_dataloader=loader, val_dataloader=loader,
                  test_dataloader=loader, train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1),
                  val_cfg=dict(), test_cfg=dict(), val_evaluator=dict(type=MeanLogit),
                  test_evaluator=dict(type=MeanLogit), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05)),
                  custom_hooks=hooks, default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
                  experiment_name=os.path.basename(str(work_dir)), **kwargs)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Train with RepFuseHook (on_val) + EMAHook + SafeCheckpointHook; return the work dir."""
    work = tmp_path_factory.mktemp('run')
    runner = _runner(work, [dict(type='RepFuseHook', on_val=True), dict(type='SafeCheckpointHook'),
                            dict(type='EMAHook')])
    runner.train()
    model = runner.model
    assert not find_rep_backbones(model)[0][1].deploy          # training never fused the trained model
    assert 'test_step' not in model.__dict__ and 'val_step' not in model.__dict__
    return work


def test_checkpoints_of_our_runs_load_safely(trained):
    ckpt = read_checkpoint(str(trained / 'epoch_2.pth'), trust=False)
    assert {'state_dict', 'message_hub', 'ema_state_dict'} <= set(ckpt)


def test_mmengine_reads_what_it_can_and_the_safe_reader_only_the_rest(trained, tmp_path, monkeypatch):
    """Through mmengine's ``CheckpointLoader``: a plain weights file is read by mmengine's own reader
    (the safe reader is not called), a Runner checkpoint (which mmengine's reader refuses on torch >= 2.6)
    by the safe one, and a damaged file gets the safe reader's message naming the file."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from rep_backbones.checkpoint import CheckpointError
    from rep_backbones.mm import safe_load
    calls = []
    monkeypatch.setattr(safe_load, 'read_checkpoint',
                        lambda *a, **k: calls.append(a[0]) or read_checkpoint(*a, **k))
    plain = tmp_path / 'plain.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}}, plain)
    assert torch.equal(CheckpointLoader.load_checkpoint(str(plain))['state_dict']['w'], torch.ones(2))
    assert calls == []
    runner_file = str(trained / 'epoch_2.pth')
    assert 'message_hub' in CheckpointLoader.load_checkpoint(runner_file)
    assert calls == [runner_file]
    damaged = tmp_path / 'damaged.pth'
    damaged.write_bytes(plain.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match='damaged.pth'):
        CheckpointLoader.load_checkpoint(str(damaged))
    with pytest.raises(FileNotFoundError):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'missing.pth'))


def test_checkpoint_without_safe_hook_is_refused_unless_trusted(tmp_path, monkeypatch):
    runner = _runner(tmp_path, [], max_epochs=1)
    runner.train()
    path = str(tmp_path / 'epoch_1.pth')
    with pytest.raises(UntrustedCheckpointError, match='REP_BACKBONES_TRUST_CHECKPOINTS'):
        read_checkpoint(path)
    monkeypatch.setenv('REP_BACKBONES_TRUST_CHECKPOINTS', '1')
    assert 'message_hub' in read_checkpoint(path)


@pytest.mark.parametrize('ema', [False, True])
def test_fused_test_gives_the_same_metrics(trained, ema, monkeypatch):
    """tools/test.py with and without the hook: same metrics; the test batches ran through a fused backbone
    (deploy form, no BatchNorm) with the hook and through the training form without; with EMAHook the EMA
    weights are swapped in before fusion and swapped back afterwards without error."""
    extra = [dict(type='EMAHook')] if ema else []
    results, fused_calls = {}, []
    forward = RepGhostNet.forward

    def recording_forward(self, x):
        fused_calls.append(self.deploy and count_norms(self) == 0)
        return forward(self, x)
    monkeypatch.setattr(RepGhostNet, 'forward', recording_forward)
    batches = len(NoiseSet()) // 4
    for label, hooks in [('train', extra), ('fused', extra + [dict(type='RepFuseHook')])]:
        runner = _runner(trained / f'{label}_{ema}', hooks, load_from=str(trained / 'epoch_2.pth'))
        fused_calls.clear()
        results[label] = runner.test()
        assert not runner.model.backbone.deploy
        # with the hook, one more training-form call: its equivalence check on the first batch
        assert fused_calls.count(True) == (batches if label == 'fused' else 0), (label, fused_calls)
    assert results['fused']['mean'] == pytest.approx(results['train']['mean'], abs=1e-3)
    assert results['fused']['max'] == pytest.approx(results['train']['max'], abs=1e-3)


def test_resume_goes_through_the_safe_loader(trained):
    """Resuming from epoch 2 trains the third epoch only (a run that merely loaded the weights would
    train epochs 1 to 3 and save each), starting from the saved iteration."""
    work = trained / 'resumed'
    runner = _runner(work, [dict(type='SafeCheckpointHook')], max_epochs=3, load_from=str(trained / 'epoch_2.pth'),
                     resume=True)
    runner.train()
    assert runner.epoch == 3 and runner.iter == 3 * len(NoiseSet()) // 4
    assert sorted(p.name for p in work.glob('epoch_*.pth')) == ['epoch_3.pth']


def test_hook_rejects_a_wrong_fusion(tmp_path, monkeypatch):
    runner = _runner(tmp_path, [dict(type='RepFuseHook')], max_epochs=1)
    original = RepGhostNet._reparameterize

    def broken(self):
        original(self)
        with torch.no_grad():
            self.blocks[3][0].ghost1.primary_conv[0].bias.add_(1.0)

    monkeypatch.setattr(RepGhostNet, '_reparameterize', broken)
    with pytest.raises(RuntimeError, match='fused backbone differs from its training form'):
        runner.test()


def test_deploy_models_pass_through_untouched(tmp_path):
    runner = _runner(tmp_path, [dict(type='RepFuseHook')], max_epochs=1)
    backbone = runner.model.backbone
    backbone.switch_to_deploy()
    runner.test()
    assert 'test_step' not in runner.model.__dict__


def test_fuse_copy_keeps_state_of_original():
    model = randomize_bn(TinyClassifier()).eval()
    before = copy.deepcopy(model.state_dict())
    hook = RepFuseHook()

    class FakeRunner:
        pass

    fake = FakeRunner()
    fake.model = model
    hook.before_test_epoch(fake)
    tested = model.test_step.__self__            # what the test loop calls: a fused copy
    assert tested is not model and tested.backbone.deploy and count_norms(tested) == 0
    hook.after_test_epoch(fake)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert HOOKS.get('SafeCheckpointHook') is not None
