"""Checkpoints from http(s) URLs: a real HTTP server on 127.0.0.1 serves a temporary folder; torch hub's
cache is redirected to a temporary TORCH_HOME. Downloads happen once, are verified (sha256 prefix in the
name, complete file) and leave nothing in the cache when they fail."""
import collections
import functools
import hashlib
import http.server
import threading

import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader

from rep_backbones.checkpoint import HASH_IN_NAME, WEIGHTS_DIR_ENV, CheckpointError, read_checkpoint
from rep_backbones.models import build_backbone

from .helpers import random_backbone_state


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; counts requests per path; paths in ``server.cut_short`` announce the full
    Content-Length but send only half the bytes (a connection dropped mid-download)."""

    def do_GET(self):
        self.server.hits[self.path] += 1
        if self.path not in self.server.cut_short:
            return super().do_GET()
        data = (self.server.root / self.path.lstrip('/')).read_bytes()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True

    def log_message(self, *args):
        pass


def _start_server(root):
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Handler, directory=str(root)))
    server.root, server.hits, server.cut_short = root, collections.Counter(), set()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def served(tmp_path):
    root = tmp_path / 'www'
    root.mkdir()
    server = _start_server(root)
    server.url = f'http://127.0.0.1:{server.server_address[1]}'
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """``<torch hub dir>/checkpoints`` inside a temporary TORCH_HOME."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    assert torch.hub.get_dir() == str(tmp_path / 'torch_home' / 'hub'), 'torch.hub.set_dir() was called elsewhere'
    return tmp_path / 'torch_home' / 'hub' / 'checkpoints'


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _publish(served, state, stem='repghostnet_0_5x', with_hash=True):
    """Save ``state`` in the served folder as ``stem-<sha256[:8]>.pth`` (torch hub naming); return the name."""
    tmp = served.root / 'upload.tmp'
    torch.save({'state_dict_ema': state}, tmp)
    name = f'{stem}-{_sha256(tmp)[:8]}.pth' if with_hash else f'{stem}.pth'
    tmp.rename(served.root / name)
    return name


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_downloads_once_then_uses_the_cache(served, hub_cache):
    state = random_backbone_state()
    name = _publish(served, state)
    url = f'{served.url}/{name}'
    for _ in range(2):
        model = build_backbone('RepGhostNet', arch='0.5x', init_cfg=dict(type='Pretrained', checkpoint=url))
        model.init_weights()
        assert _equal(model.state_dict(), state)
    assert served.hits[f'/{name}'] == 1
    assert sorted(p.name for p in hub_cache.iterdir()) == [name]
    assert _equal(read_checkpoint(url)['state_dict_ema'], state) and served.hits[f'/{name}'] == 1


def test_mmengine_load_checkpoint_reads_urls_through_the_same_cache(served, hub_cache):
    """``load_from`` / ``load_checkpoint`` URLs go through read_checkpoint (safe loading, hash check)."""
    state = random_backbone_state()
    name = _publish(served, state)
    assert _equal(CheckpointLoader.load_checkpoint(f'{served.url}/{name}')['state_dict_ema'], state)
    assert (hub_cache / name).is_file() and served.hits[f'/{name}'] == 1


def test_wrong_hash_prefix_is_refused_and_not_cached(served, hub_cache):
    name = _publish(served, random_backbone_state())
    digest = name.rsplit('-', 1)[1][:8]
    wrong = name.replace(digest, format(int(digest, 16) ^ 0xFFFFFFFF, '08x'))
    (served.root / name).rename(served.root / wrong)
    expected = f'the download of {served.url}/{wrong} has sha256 .*, which does not start with {wrong[-12:-4]}'
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(f'{served.url}/{wrong}')
    assert list(hub_cache.iterdir()) == []


def test_truncated_file_on_the_server_is_refused_and_not_cached(served, hub_cache):
    """No hash in the name, so only the completeness check can catch it."""
    name = _publish(served, random_backbone_state(), with_hash=False)
    data = (served.root / name).read_bytes()
    (served.root / name).write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match=f'the download of {served.url}/{name} .*truncated or corrupt'):
        read_checkpoint(f'{served.url}/{name}')
    assert list(hub_cache.iterdir()) == []


def test_connection_dropped_mid_download_leaves_nothing(served, hub_cache):
    name = _publish(served, random_backbone_state(), with_hash=False)
    data = (served.root / name).read_bytes()
    served.cut_short.add(f'/{name}')
    expected = f'the download of {served.url}/{name} stopped after {len(data) // 2} of {len(data)} bytes'
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(f'{served.url}/{name}')
    assert list(hub_cache.iterdir()) == []


def test_http_404_names_the_url(served, hub_cache):
    url = f'{served.url}/missing-0123abcd.pth'
    model = build_backbone('RepGhostNet', arch='0.5x', init_cfg=dict(type='Pretrained', checkpoint=url))
    with pytest.raises(CheckpointError, match=f'could not download checkpoint {url}: HTTP Error 404') as info:
        model.init_weights()
    assert WEIGHTS_DIR_ENV in str(info.value) and str(hub_cache / 'missing-0123abcd.pth') in str(info.value)


def test_no_server_says_how_to_use_a_local_copy(tmp_path, hub_cache):
    server = _start_server(tmp_path)
    url = f'http://127.0.0.1:{server.server_address[1]}/w.pth'
    server.shutdown()
    server.server_close()
    with pytest.raises(CheckpointError, match=f'could not download checkpoint {url}: .*Connection refused.*'
                                              f'To use a local copy instead.*{WEIGHTS_DIR_ENV}'):
        read_checkpoint(url)


def test_local_weights_dir_is_used_before_downloading(served, hub_cache, tmp_path, monkeypatch):
    state = random_backbone_state(1)
    name = _publish(served, random_backbone_state(2))
    local = tmp_path / 'offline'
    local.mkdir()
    torch.save(state, local / name)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(local))
    assert _equal(read_checkpoint(f'{served.url}/{name}'), state)
    assert served.hits[f'/{name}'] == 0 and not hub_cache.exists()
    other = _publish(served, random_backbone_state(3), stem='other')  # not in the local folder: downloaded
    assert 'state_dict_ema' in read_checkpoint(f'{served.url}/{other}') and served.hits[f'/{other}'] == 1


def test_damaged_cached_copy_names_the_url_and_the_file(served, hub_cache):
    name = _publish(served, random_backbone_state())
    hub_cache.mkdir(parents=True)
    (hub_cache / name).write_bytes(b'')
    with pytest.raises(CheckpointError, match=f'is empty.*local copy of {served.url}/{name}: delete or replace'):
        read_checkpoint(f'{served.url}/{name}')
    assert served.hits[f'/{name}'] == 0


@pytest.mark.parametrize('name, digest', [
    ('resnet18-f37072fd.pth', 'f37072fd'),
    ('repvgg-A0_8xb32_in1k_20221213-60ae8e23.pth', '60ae8e23'),   # the date is not taken for a hash
    ('w-0123abcd.pth.tar', '0123abcd'),
    ('repghostnet_1_0x_142M_74.22.pth.tar', None),
    ('w-abc123.pth', None),                                       # fewer than 8 digits
    ('w-0123abcd.v2-final.pth', None),                            # only the last '-' part counts
])
def test_hash_prefix_is_read_from_the_last_dash_part_of_the_name(name, digest):
    match = HASH_IN_NAME.search(name)
    assert (match.group(1) if match else None) == digest
