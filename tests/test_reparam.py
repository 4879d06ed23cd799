"""The shared re-parameterization algebra, checked against the modules it replaces."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rep_backbones import reparam

from .helpers import assert_rel_close, randomize_bn


def _bn(c, seed=0):
    return randomize_bn(nn.BatchNorm2d(c), seed).eval()


@pytest.mark.parametrize('bias', [True, False])
def test_fold_bn_into_conv_matches_module_pair(bias):
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=bias)
    bn = _bn(6)
    x = torch.randn(2, 4, 13, 11)
    ref = bn(conv(x))
    reparam.fold_bn_into(conv, bn)
    assert torch.allclose(conv(x), ref, atol=1e-5)
    assert conv.bias is not None and conv.stride == (2, 2)
    with pytest.raises(TypeError, match='cannot fold'):
        reparam.fold_bn_into(nn.ReLU(), bn)


def test_syncbn_folds_like_bn():
    bn = _bn(5)
    sync = nn.SyncBatchNorm(5).eval()
    sync.load_state_dict(bn.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(reparam.bn_scale_shift(bn), reparam.bn_scale_shift(sync)))


@pytest.mark.parametrize('groups', [1, 3])
def test_bn_branch_and_identity_as_kernels(groups):
    x = torch.randn(2, 6, 9, 7)
    bn = _bn(6)
    kernel, bias = reparam.bn_branch(bn, groups=groups, size=(3, 3))
    assert torch.allclose(F.conv2d(x, kernel, bias, padding=1, groups=groups), bn(x), atol=1e-5)
    ident = reparam.identity_kernel(6, groups, (1, 1))
    assert torch.equal(F.conv2d(x, ident, groups=groups), x)


def test_merge_parallel_branches_with_padding():
    x = torch.randn(1, 4, 10, 9)
    conv3 = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    conv1 = nn.Conv2d(4, 4, 1, groups=4)
    bn3, bn1, bn_id = _bn(4, 1), _bn(4, 2), _bn(4, 3)
    branches = [reparam.conv_bn_branch(conv3, bn3), reparam.conv_bn_branch(conv1, bn1),
                reparam.bn_branch(bn_id, groups=4)]
    merged = reparam.make_conv(conv3, *reparam.merge_branches(branches))
    ref = bn3(conv3(x)) + bn1(conv1(x)) + bn_id(x)
    assert torch.allclose(merged(x), ref, atol=1e-5)
    one = reparam.make_conv(conv1, *reparam.merge_branches(branches))   # geometry taken from a 1x1 template
    assert one.padding == (1, 1) and torch.allclose(one(x), ref, atol=1e-5)


def test_pad_kernel_rejects_uncentrable_sizes():
    with pytest.raises(ValueError, match='cannot centre'):
        reparam.pad_kernel(torch.zeros(1, 1, 2, 2), (3, 3))


@pytest.mark.parametrize('groups', [1, 2])
def test_fold_preceding_affine_on_unpadded_conv(groups):
    x = torch.randn(2, 4, 6, 5)
    bn = _bn(4)
    conv = nn.Conv2d(4, 6, 1, groups=groups, bias=True)
    kernel, bias = reparam.fold_preceding_affine(conv.weight, conv.bias, *reparam.bn_scale_shift(bn), groups=groups)
    assert torch.allclose(F.conv2d(x, kernel, bias, groups=groups), conv(bn(x)), atol=1e-5)


def test_state_dict_folding_equals_module_folding():
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, bias=False), _bn(5))
    x = torch.randn(1, 3, 8, 8)
    ref = model(x)
    sd = reparam.fold_bn_pairs_in_state_dict(dict(model.state_dict()), [('0', '1')])
    assert set(sd) == {'0.weight', '0.bias'}
    assert reparam.conv_bn_pairs(model) == [('0', '1')]
    assert reparam.fold_conv_bn_pairs(model) == 1 and reparam.fold_conv_bn_pairs(model) == 0
    assert reparam.conv_bn_pairs(model) == [('0', '1')]          # the folded pair still names the keys
    assert isinstance(model[1], nn.Identity) and torch.allclose(model(x), ref, atol=1e-5)
    assert torch.allclose(sd['0.weight'], model[0].weight) and torch.allclose(sd['0.bias'], model[0].bias)


# -- identity-like branches, pre-conv BatchNorm at zero-padded borders (RepMobile) -----------------

@pytest.mark.parametrize('size', [(9, 7), (8, 6), (1, 1), (2, 3)])
def test_avg_pool_kernel_is_count_include_pad_avgpool(size):
    x = torch.randn(2, 5, *size)
    kernel = reparam.avg_pool_kernel(5, 3)
    pool = nn.AvgPool2d(3, 2, 1)                                  # count_include_pad=True (default)
    assert torch.allclose(F.conv2d(x, kernel, stride=2, padding=1, groups=5), pool(x), atol=1e-6)
    if size == (9, 7):   # the other convention is not a kernel: it differs at the border
        excl = nn.AvgPool2d(3, 2, 1, count_include_pad=False)(x)
        assert not torch.allclose(F.conv2d(x, kernel, stride=2, padding=1, groups=5), excl, atol=1e-3)


def test_tiled_identity_kernel_duplicates_input():
    x = torch.randn(2, 4, 5, 3)
    assert torch.equal(F.conv2d(x, reparam.tiled_identity_kernel(4, 2)), torch.cat((x, x), dim=1))
    assert torch.equal(F.conv2d(x, reparam.tiled_identity_kernel(4, 1, (3, 3)), padding=1), x)


def test_preceding_shift_taps_sum_to_the_folded_bias():
    conv = nn.Conv2d(6, 4, 3, padding=1, groups=2)
    scale, shift = reparam.bn_scale_shift(_bn(6))
    _, bias = reparam.fold_preceding_affine(conv.weight, conv.bias, scale, shift, groups=2)
    taps = reparam.preceding_shift_taps(conv.weight, shift, groups=2)
    assert taps.shape == (4, 3, 3)
    assert torch.allclose(conv.bias + taps.sum(dim=(1, 2)), bias, atol=1e-6)


@pytest.mark.parametrize('cin,cout,k,stride,pad,dil,groups', [
    (6, 6, 3, 1, 1, 1, 6),      # RepMobile's depthwise 3x3
    (6, 6, 3, 2, 1, 1, 6),      # ... with stride 2
    (4, 6, 3, 1, 1, 1, 2),      # grouped, channel-changing
    (4, 4, 5, 2, 2, 1, 1),      # wider padding band (2 rows / cols per side)
    (4, 4, 3, 1, 2, 2, 4),      # dilated
])
@pytest.mark.parametrize('size', [(11, 9), (10, 12), (1, 1), (2, 3), (4, 1)])
def test_fuse_bn_conv_exact_at_every_pixel(cin, cout, k, stride, pad, dil, groups, size):
    bn = _bn(cin)
    conv = nn.Conv2d(cin, cout, k, stride, pad, dilation=dil, groups=groups)
    x = torch.randn(2, cin, *size) * 3
    ref = conv(bn(x))
    fused = reparam.fuse_bn_conv(bn, conv)
    assert isinstance(fused, reparam.BorderCorrectedConv2d)
    with torch.no_grad():
        out = fused(x)
    assert out.shape == ref.shape
    assert_rel_close(ref, out, rtol=1e-5)
    # without the border term only the interior is right: the test sees the borders
    naive = F.conv2d(x, fused.weight, fused.bias, stride, pad, dil, groups)
    band_h, band_w = -(-pad // stride), -(-pad // stride)
    if ref.shape[-2] > 2 * band_h and ref.shape[-1] > 2 * band_w:
        inner = (slice(None), slice(None), slice(band_h, -band_h), slice(band_w, -band_w))
        assert torch.allclose(naive[inner], ref[inner], atol=1e-5)
    assert not torch.allclose(naive, ref, atol=1e-3)


def test_fuse_bn_conv_with_shortcut_branches():
    x = torch.randn(1, 8, 13, 10)
    bn = _bn(8)
    for stride, extra, shortcut in ((2, reparam.avg_pool_kernel(8, 3), nn.AvgPool2d(3, 2, 1)),
                                    (1, reparam.identity_kernel(8, 8), nn.Identity())):
        conv = nn.Conv2d(8, 8, 3, stride, 1, groups=8)
        fused = reparam.fuse_bn_conv(bn, conv, (extra, torch.zeros(8)))
        ref = conv(bn(x)) + shortcut(x)
        with torch.no_grad():
            assert_rel_close(ref, fused(x), rtol=1e-5)


def test_fuse_bn_conv_unpadded_is_plain_conv_and_state_dict_has_taps():
    bn = _bn(4)
    plain = reparam.fuse_bn_conv(bn, nn.Conv2d(4, 4, 1))
    assert type(plain) is nn.Conv2d
    padded = reparam.fuse_bn_conv(bn, nn.Conv2d(4, 4, 3, padding=1, groups=4))
    assert set(padded.state_dict()) == {'weight', 'bias', 'border_taps'}
    clone = reparam.BorderCorrectedConv2d(4, 4, 3, padding=1, groups=4)
    clone.load_state_dict(padded.state_dict())
    x = torch.randn(1, 4, 7, 5)
    with torch.no_grad():
        assert torch.equal(clone(x), padded(x))


def test_fold_bn_into_linear():
    linear = nn.Linear(6, 5, bias=False)
    bn = randomize_bn(nn.BatchNorm1d(5)).eval()
    x = torch.randn(3, 6)
    ref = bn(linear(x))
    reparam.fold_bn_into(linear, bn)
    assert torch.allclose(linear(x), ref, atol=1e-5)


class _Declared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.other = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), None

    def conv_bn_pairs(self):
        return [('conv', 'bn'), ('conv', 'other')]


def test_conv_bn_pairs_one_rule():
    """Declared by the module itself, or by the owner's table for classes it does not define; plain
    ``nn.Sequential`` neighbours whose first member can absorb the BN; absent members left out."""
    assert reparam.conv_bn_pairs(_Declared()) == [('conv', 'bn')]
    foreign = nn.Module()
    foreign.c, foreign.b = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
    assert reparam.conv_bn_pairs(foreign) == []
    assert reparam.conv_bn_pairs(foreign, {nn.Module: (('c', 'b'),)}) == [('c', 'b')]
    seq = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    assert reparam.conv_bn_pairs(seq) == [('2', '3')]

    class Custom(nn.Sequential):           # a forward that is not the chain: no neighbour rule
        def forward(self, x):
            return x
    assert reparam.conv_bn_pairs(Custom(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))) == []


# -- dilated / serial depthwise kernels (added with RepNeXt) -------------------------------------------
def test_dilated_kernel_equals_dilated_conv():
    conv = nn.Conv2d(3, 3, 2, stride=1, padding=1, dilation=2, groups=3)
    dense = reparam.dilate_kernel(conv.weight, 2)
    assert dense.shape == (3, 1, 3, 3) and torch.equal(dense[..., 1, :], torch.zeros(3, 1, 3))
    x = torch.randn(1, 3, 9, 8)
    assert torch.allclose(F.conv2d(x, dense, conv.bias, padding=1, groups=3), conv(x), atol=1e-6)
    assert reparam.dilate_kernel(torch.ones(1, 1, 3, 2), (1, 3)).shape == (1, 1, 3, 4)


@pytest.mark.parametrize('k,stride', [(3, 1), (7, 1), (5, 2), (11, 1)])
def test_compose_row_then_column_depthwise_is_exact(k, stride):
    c, p = 4, k // 2
    row = nn.Conv2d(c, c, (1, k), (1, stride), (0, p), groups=c, bias=False)
    col = nn.Conv2d(c, c, (k, 1), (stride, 1), (p, 0), groups=c, bias=True)
    kernel, bias = reparam.compose_depthwise(row.weight, col.weight, None, col.bias)
    assert kernel.shape == (c, 1, k, k)
    assert torch.allclose(kernel, col.weight * row.weight, atol=1e-7)  # outer product
    x = torch.randn(1, c, 13, 10)
    out = F.conv2d(x, kernel, bias, stride=stride, padding=p, groups=c)
    assert torch.allclose(out, col(row(x)), atol=1e-5)


def test_compose_general_kernels_in_the_interior():
    first, second = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 5)
    kernel, bias = reparam.compose_depthwise(first, second, torch.tensor([0.3, -1.0]), torch.tensor([0.5, 0.0]))
    assert kernel.shape == (2, 1, 5, 7)
    x = torch.randn(1, 2, 15, 17)
    serial = F.conv2d(F.conv2d(x, first, torch.tensor([0.3, -1.0]), padding=1, groups=2), second,
                      torch.tensor([0.5, 0.0]), padding=(1, 2), groups=2)
    composed = F.conv2d(x, kernel, bias, padding=(2, 3), groups=2)
    assert torch.allclose(serial[..., 2:-2, 3:-3], composed[..., 2:-2, 3:-3], atol=1e-5)  # borders differ


def test_serial_first_bias_border_profile_makes_composition_exact():
    c, k = 3, 5
    row = nn.Conv2d(c, c, (1, k), 1, (0, k // 2), groups=c, bias=True)
    col = nn.Conv2d(c, c, (k, 1), 1, (k // 2, 0), groups=c, bias=True)
    kernel, bias = reparam.compose_depthwise(row.weight, col.weight, row.bias, col.bias)
    x = torch.randn(1, c, 9, 7)
    composed = F.conv2d(x, kernel, bias, padding=k // 2, groups=c)
    profile = reparam.serial_bias_border_profile(col.weight, 9, col.padding)
    assert profile.shape == (c, 9) and profile[:, 2:-2].abs().max() < 1e-6
    fixed = composed + (row.bias[:, None] * profile)[None, :, :, None]
    assert torch.allclose(fixed, col(row(x)), atol=1e-5)
    assert not torch.allclose(composed, col(row(x)), atol=1e-3)


def test_fold_following_affine_is_fold_bn():
    conv, bn = nn.Conv2d(4, 6, 3, padding=1), _bn(6)
    scale, shift = reparam.bn_scale_shift(bn)
    a = reparam.fold_following_affine(conv.weight, conv.bias, scale, shift)
    b = reparam.fold_bn(conv.weight, conv.bias, bn)
    assert all(torch.allclose(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize('stride,size', [(1, (13, 11)), (2, (12, 9)), (2, (1, 2))])
def test_border_corrected_conv_traced_path_equals_eager(stride, size):
    """The graph form used for ONNX export (deficit map) equals the eager strip updates."""
    conv = nn.Conv2d(4, 4, 3, stride=stride, padding=1, groups=4, bias=True)
    taps = torch.randn(4, 3, 3)
    fused = reparam.make_border_corrected_conv(conv, conv.weight.detach(), conv.bias.detach(), taps).eval()
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        eager = fused(x)
        graph = nn.Conv2d.forward(fused, x) - fused.deficit_map(x)
        traced = torch.jit.trace(fused, x)(x)
    assert torch.allclose(eager, graph, atol=1e-5) and torch.allclose(eager, traced, atol=1e-5)


def test_border_strips_cached_per_size_never_stale():
    """The strips are cached per input size: sizes in any order, repeated, and in inference mode give the
    rebuilt-every-call result; new taps (``load_state_dict``, in-place ``copy_``) and a new dtype are never
    served from the cache."""
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=True)
    fused = reparam.make_border_corrected_conv(conv, conv.weight.detach(), conv.bias.detach(),
                                               torch.randn(4, 3, 3)).eval()

    def rebuilt(module, x):   # the correction built for this call alone
        out = nn.Conv2d.forward(module, x)
        return out - module.deficit_map(x)
    sizes = [(13, 11), (6, 9), (13, 11), (1, 2), (6, 9)]
    with torch.no_grad():
        for size in sizes:
            x = torch.randn(1, 4, *size)
            assert torch.allclose(fused(x), rebuilt(fused, x), atol=1e-5), size
    assert len(fused._border_strip_cache) == 3
    with torch.inference_mode():
        x = torch.randn(1, 4, 13, 11)
        expected = rebuilt(fused, x)
        assert torch.allclose(fused(x), expected, atol=1e-5)
    y = x.clone().requires_grad_()         # cached strips (built in inference mode) under autograd
    fused(y).sum().backward()
    assert y.grad is not None
    other = {k: v.clone() for k, v in fused.state_dict().items()}
    other['border_taps'] = torch.randn(4, 3, 3) * 5
    fused.load_state_dict(other)
    x = torch.randn(1, 4, 13, 11)
    with torch.no_grad():
        assert torch.allclose(fused(x), rebuilt(fused, x), atol=1e-4)
        fused.border_taps.copy_(torch.randn(4, 3, 3))
        assert torch.allclose(fused(x), rebuilt(fused, x), atol=1e-4)
        double = fused.double()
        assert torch.allclose(double(x.double()), rebuilt(double, x.double()), atol=1e-9)
    with torch.inference_mode():            # fused inside inference mode: taps without a version counter
        made = reparam.make_border_corrected_conv(conv, conv.weight.detach(), conv.bias.detach(),
                                                  torch.randn(4, 3, 3)).eval()
        assert made.border_taps.is_inference()
        first = made(x)
        made.border_taps.mul_(3)            # allowed in inference mode, and invisible to a version check
        assert torch.allclose(made(x), rebuilt(made, x), atol=1e-4) and not torch.allclose(made(x), first)
