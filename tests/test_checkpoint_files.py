"""Reading checkpoint files: every kind of file that is not a checkpoint is refused with a message that
names the file and says what it is; torch.save (zip and legacy) and safetensors files load equally."""
import gzip
import pickle
import re
import warnings
import zipfile

import numpy as np
import pytest
import safetensors.torch
import torch

from rep_backbones.checkpoint import CheckpointError, CheckpointNotFoundError, UntrustedCheckpointError, read_checkpoint
from rep_backbones.models import build_backbone

from .helpers import random_backbone_state


def _small_state_dict():
    return {'w': torch.arange(6.0).reshape(2, 3)}


def _torch_zip_bytes(tmp_path):
    path = tmp_path / 'whole.pth'
    torch.save(_small_state_dict(), path)
    return path.read_bytes()


def _random_bytes(path):
    torch.manual_seed(0)
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())


def _foreign_zip(path):
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('weights/readme.txt', 'not a torch file')


def _torchscript(path):
    with warnings.catch_warnings():  # torch.jit is deprecated, but such files still exist
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)


def _truncated_zip(path):
    path.write_bytes(_torch_zip_bytes(path.parent)[:-300])


def _truncated_legacy(path):
    torch.save(_small_state_dict(), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-40])


def _damaged_weights(path):
    """Bytes of a tensor's storage flipped: a well-formed file whose weights torch.load reads as is."""
    path.write_bytes(_torch_zip_bytes(path.parent))
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if info.filename.endswith('/data/0'))
    data = bytearray(path.read_bytes())
    header = member.header_offset  # local file header: 30 bytes, then the name and the extra field
    start = header + 30 + int.from_bytes(data[header + 26:header + 28], 'little') + int.from_bytes(
        data[header + 28:header + 30], 'little')
    data[start:start + 4] = bytes(255 - b for b in data[start:start + 4])
    path.write_bytes(bytes(data))


def _garbled_legacy(path):
    torch.save(_small_state_dict(), path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    data[20:28] = b'\xff' * 8
    path.write_bytes(bytes(data))


def _truncated_safetensors(path):
    safetensors.torch.save_file(_small_state_dict(), path)
    path.write_bytes(path.read_bytes()[:-5])


# name -> (how to write the file, what the message must say about it)
BAD_FILES = {
    'random.pth': (_random_bytes, 'is not a checkpoint: neither a torch.save file'),
    'empty.pth': (lambda p: p.write_bytes(b''), r'is empty \(0 bytes\)'),
    'notes.pth': (lambda p: p.write_text('learning rate 0.1\nepochs 12\n'),
                  r"is a text file \(starts with 'learning rate 0.1'\)"),
    'lfs.pth': (lambda p: p.write_text('version https://git-lfs.github.com/spec/v1\noid sha256:0\n'),
                'Git LFS pointer, run `git lfs pull`'),
    'page.pth': (lambda p: p.write_text('<!DOCTYPE html>\n<html>Sign in</html>'), 'an HTML page'),
    'foreign.zip': (_foreign_zip, r"zip archive but not a torch.save file \(no data.pkl\)"),
    'scripted.pt': (_torchscript, r'TorchScript archive \(torch.jit.save\).*torch.jit.load'),
    'cut.pth': (_truncated_zip, 'torch.save zip archive but is truncated or corrupt'),
    'cut_legacy.pth': (_truncated_legacy, 'is corrupt or truncated'),
    'flipped.pth': (_damaged_weights, r"is corrupt: member '.*/data/0' of its zip archive fails its CRC check"),
    'garbled_legacy.pth': (_garbled_legacy, 'is corrupt or truncated.*Unsupported operand'),
    'cut.safetensors': (_truncated_safetensors, 'corrupt or truncated safetensors file'),
    'list.pth': (lambda p: torch.save([torch.zeros(2)], p), 'holds a list, not a state dict'),
    'tensor.pth': (lambda p: torch.save(torch.zeros(2), p), 'holds a Tensor, not a state dict'),
    'weights.pth.gz': (lambda p: p.write_bytes(gzip.compress(_torch_zip_bytes(p.parent))),
                       r'is gzip-compressed \(a .gz / .tar.gz download\?\): unpack it first'),
    'array.npy': (lambda p: np.save(p, np.zeros(3)), 'is a NumPy .npy array, not a checkpoint'),
    'plain.pkl': (lambda p: p.write_bytes(pickle.dumps({'w': [1.0, 2.0]}, protocol=4)),
                  'is a Python pickle but not a torch.save file'),
    'folder.pth': (lambda p: p.mkdir(), 'is a directory'),
}


@pytest.fixture(params=sorted(BAD_FILES))
def bad_file(request, tmp_path):
    write, message = BAD_FILES[request.param]
    path = tmp_path / request.param
    write(path)
    return path, message


def test_bad_file_is_named_and_described(bad_file):
    path, message = bad_file
    with pytest.raises(CheckpointError, match=re.escape(repr(str(path))) + '.*' + message):
        read_checkpoint(path)


def test_bad_file_through_backbone_init_cfg(bad_file):
    path, message = bad_file
    model = build_backbone('RepGhostNet', arch='0.5x', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=message) as info:
        model.init_weights()
    assert str(path) in str(info.value)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_checkpoint(tmp_path / 'absent.pth')
    assert isinstance(info.value, CheckpointNotFoundError) and 'absent.pth' in str(info.value)


@pytest.mark.parametrize('writer, name', [
    (lambda sd, p: torch.save(sd, p), 'w.pth'),
    (lambda sd, p: torch.save(sd, p, _use_new_zipfile_serialization=False), 'w_legacy.pth'),
    (lambda sd, p: safetensors.torch.save_file(sd, p, metadata={'format': 'pt'}), 'w.safetensors'),
    (lambda sd, p: safetensors.torch.save_file(sd, p), 'safetensors_named.bin'),  # told by content
])
def test_every_format_loads_the_same_weights(tmp_path, writer, name):
    source = random_backbone_state(0)
    writer(source, tmp_path / name)
    loaded = read_checkpoint(tmp_path / name)
    assert loaded.keys() == source.keys() and all(torch.equal(loaded[k], source[k]) for k in source)
    model = build_backbone('RepGhostNet', arch='0.5x',
                           init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / name)))
    model.init_weights()
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())


def test_safetensors_equals_pth_with_wrapper_prefix(tmp_path):
    """A detector-style file (``backbone.`` keys) as .safetensors loads exactly like the .pth one."""
    source = {f'backbone.{k}': v for k, v in random_backbone_state(1).items()}
    source['neck.conv.weight'] = torch.ones(1)
    torch.save({'state_dict': source}, tmp_path / 'det.pth')
    safetensors.torch.save_file(source, tmp_path / 'det.safetensors')
    states = []
    for name in ('det.pth', 'det.safetensors'):
        model = build_backbone('RepGhostNet', arch='0.5x', init_cfg=dict(
            type='Pretrained', checkpoint=str(tmp_path / name), prefix='backbone.'))
        model.init_weights()
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert torch.equal(states[1]['conv_stem.weight'], source['backbone.conv_stem.weight'])


def test_safetensors_map_location_must_be_a_device(tmp_path):
    safetensors.torch.save_file(_small_state_dict(), tmp_path / 'w.safetensors')
    assert read_checkpoint(tmp_path / 'w.safetensors', map_location=None)['w'].device.type == 'cpu'
    with pytest.raises(ValueError, match='map_location must be a device'):
        read_checkpoint(tmp_path / 'w.safetensors', map_location=lambda storage, loc: storage)


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
def test_valid_pickle_the_safe_loader_cannot_read_asks_for_trust_not_corrupt(tmp_path):
    """torch.save(pickle_protocol=4) is valid but uses opcodes torch's weights-only unpickler lacks."""
    path = tmp_path / 'protocol4.pth'
    torch.save(_small_state_dict(), path, pickle_protocol=4)
    with pytest.raises(UntrustedCheckpointError, match='REP_BACKBONES_TRUST_CHECKPOINTS=1.*Unsupported operand'):
        read_checkpoint(path)
    assert torch.equal(read_checkpoint(path, trust=True)['w'], _small_state_dict()['w'])


def test_damaged_weights_are_what_torch_load_alone_would_return(tmp_path):
    """Why the CRC check: torch.load reads the file with the flipped bytes and returns wrong weights."""
    path = tmp_path / 'flipped.pth'
    _damaged_weights(path)
    assert not torch.equal(torch.load(path, weights_only=True)['w'], _small_state_dict()['w'])
    with pytest.raises(CheckpointError, match='fails its CRC check'):
        read_checkpoint(path)
