"""Modulated deformable convolution against a slow loop reference, gradcheck and torchvision."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from napari_xfusion.nn import dcn
from napari_xfusion.nn.dcn import DCNv2Pack, modulated_deform_conv2d


def _bilinear_ref(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's ``bilinear_interpolate`` for one point of ``img`` (C, H, W): zero outside."""
    c, h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return img.new_zeros(c)
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    val = img.new_zeros(c)
    for yy, xx, wt in (
        (y0, x0, (1 - ly) * (1 - lx)),
        (y0, x0 + 1, (1 - ly) * lx),
        (y0 + 1, x0, ly * (1 - lx)),
        (y0 + 1, x0 + 1, ly * lx),
    ):
        if 0 <= yy < h and 0 <= xx < w:
            val = val + wt * img[:, yy, xx]
    return val


def _reference(x, offset, mask, weight, bias, stride, padding, dilation, groups):
    """Direct DCNv2 with explicit loops over batch, output pixels, groups and taps (slow)."""
    b, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    cg = c // groups
    out = x.new_zeros(b, c_out, ho, wo)
    for n in range(b):
        for oy in range(ho):
            for ox in range(wo):
                acc = x.new_zeros(c_out)
                for g in range(groups):
                    for i in range(kh):
                        for j in range(kw):
                            t = g * kh * kw + i * kw + j
                            dy = float(offset[n, 2 * t, oy, ox])
                            dx = float(offset[n, 2 * t + 1, oy, ox])
                            y = oy * stride - padding + i * dilation + dy
                            xx = ox * stride - padding + j * dilation + dx
                            v = _bilinear_ref(x[n, g * cg : (g + 1) * cg], y, xx)
                            v = v * mask[n, t, oy, ox]
                            acc = acc + weight[:, g * cg : (g + 1) * cg, i, j] @ v
                out[n, :, oy, ox] = acc
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _inputs(
    b=2,
    c=4,
    h=5,
    w=6,
    c_out=3,
    k=3,
    groups=2,
    stride=1,
    padding=1,
    dilation=1,
    scale=2.5,
    dtype=torch.float64,
    seed=0,
):
    gen = torch.Generator().manual_seed(seed)
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    # Offsets of a few pixels push taps well across the border and are never integers.
    offset = scale * torch.randn(b, 2 * groups * k * k, ho, wo, generator=gen, dtype=dtype)
    mask = torch.rand(b, groups * k * k, ho, wo, generator=gen, dtype=dtype)
    weight = torch.randn(c_out, c, k, k, generator=gen, dtype=dtype)
    bias = torch.randn(c_out, generator=gen, dtype=dtype)
    return x, offset, mask, weight, bias


@pytest.fixture(params=["one chunk", "small chunks"])
def chunking(request, monkeypatch):
    """Run the pure version as one block and as many small chunks of output pixels."""
    if request.param == "small chunks":
        # A handful of output pixels per chunk for the tiny inputs below (B * C * K = 72).
        monkeypatch.setattr(dcn, "_CHUNK_ELEMS", 72 * 7)
        monkeypatch.setattr(dcn, "_CHUNK_ELEMS_GRAD", 72 * 11)
    return request.param


CASES = {
    "plain": dict(stride=1, padding=1, dilation=1),
    "stride 2": dict(stride=2, padding=1, dilation=1),
    "dilation 2": dict(stride=1, padding=2, dilation=2),
    "no padding": dict(stride=1, padding=0, dilation=1),
}


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("case", list(CASES))
def test_pure_matches_loop_reference(case, grad, chunking):
    geom = CASES[case]
    x, offset, mask, weight, bias = _inputs(**geom)
    want = _reference(x, offset, mask, weight, bias, groups=2, **geom)
    with torch.set_grad_enabled(grad):
        if grad:
            x.requires_grad_()
        got = modulated_deform_conv2d(
            x, offset, mask, weight, bias, deform_groups=2, backend="pure", **geom
        )
    assert got.shape == want.shape
    torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-5)


def test_integer_offsets_and_points_on_the_border():
    # Integer offsets put sample points exactly on pixels, on the last row/column, and exactly
    # one pixel outside (y = -1, y = H), where torchvision reads zero.
    x, offset, mask, weight, bias = _inputs(scale=2.0)
    offset = offset.round()
    got = modulated_deform_conv2d(x, offset, mask, weight, bias, deform_groups=2, backend="pure")
    want = _reference(x, offset, mask, weight, bias, 1, 1, 1, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_float32_matches_float64():
    # Sampling goes through normalised coordinates; in float32 that must cost only round-off.
    x, offset, mask, weight, bias = _inputs(b=1, c=8, h=30, w=70, c_out=8, scale=3.0, seed=1)
    want = modulated_deform_conv2d(x, offset, mask, weight, bias, deform_groups=2)
    got = modulated_deform_conv2d(
        *(t.float() for t in (x, offset, mask, weight, bias)), deform_groups=2
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_mixed_dtypes_follow_the_input():
    # Under autocast the features are half precision and the parameters float32.
    x, offset, mask, weight, bias = _inputs()
    want = _reference(x, offset, mask, weight, bias, 1, 1, 1, 2)
    w32 = weight.float().requires_grad_()
    got = modulated_deform_conv2d(x, offset.float(), mask.float(), w32, bias.float(), 1, 1, 1, 2)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    got.sum().backward()
    assert w32.grad.dtype == torch.float32


def test_gradcheck_pure(chunking):
    # One channel per deformable group keeps the numerical Jacobian small (about 600 columns).
    x, offset, mask, weight, bias = _inputs(b=1, c=2, h=3, w=4, c_out=2, scale=1.5)
    args = [t.requires_grad_() for t in (x, offset, mask, weight, bias)]

    def fn(x, offset, mask, weight, bias):
        return modulated_deform_conv2d(
            x, offset, mask, weight, bias, deform_groups=2, backend="pure"
        )

    # The chunked variant only has to agree on random projections (fast mode).
    fast = chunking == "small chunks"
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5, fast_mode=fast)


def test_shape_errors():
    x, offset, mask, weight, bias = _inputs()
    with pytest.raises(ValueError, match="offset must have shape"):
        modulated_deform_conv2d(x, offset[:, :-2], mask, weight, bias, deform_groups=2)
    with pytest.raises(ValueError, match="mask must have shape"):
        modulated_deform_conv2d(x, offset, mask[:, :-1], weight, bias, deform_groups=2)
    with pytest.raises(ValueError, match="not divisible"):
        modulated_deform_conv2d(x, offset, mask, weight, bias, deform_groups=3)


def test_backend_choice(monkeypatch):
    x = torch.zeros(1, 2, 3, 3)
    monkeypatch.delenv(dcn.BACKEND_ENV, raising=False)
    # On CPU the pure version is the fast one, whether torchvision imports or not.
    assert dcn._choose_backend(x, None) == "pure"
    monkeypatch.setenv(dcn.BACKEND_ENV, "pure")
    assert dcn._choose_backend(x, "auto") == "pure"
    with pytest.raises(ValueError, match="unknown DCN backend"):
        dcn._choose_backend(x, "cudnn")
    monkeypatch.setattr(dcn, "_tv_deform_conv2d", None)
    monkeypatch.setenv(dcn.BACKEND_ENV, "torchvision")
    with pytest.raises(RuntimeError, match="does not import"):
        dcn._choose_backend(x, None)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_torchvision(case):
    ops = pytest.importorskip("torchvision.ops", exc_type=ImportError)
    geom = CASES[case]
    x, offset, mask, weight, bias = _inputs(**geom)
    ins = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
    got = modulated_deform_conv2d(*ins, deform_groups=2, backend="pure", **geom)
    ref_ins = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
    xr, offr, mr, wr, br = ref_ins
    want = ops.deform_conv2d(xr, offr, wr, br, mask=mr, **geom)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    grad_out = torch.randn_like(want)
    grads = torch.autograd.grad(got, ins, grad_out)
    ref_grads = torch.autograd.grad(want, ref_ins, grad_out)
    for name, a, b in zip(("x", "offset", "mask", "weight", "bias"), grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8, msg=lambda m, n=name: f"{n}: {m}")


def test_matches_torchvision_with_integer_offsets():
    # Zero-initialised offsets put the border taps exactly one pixel outside the image: value
    # and every gradient must still be torchvision's.
    ops = pytest.importorskip("torchvision.ops", exc_type=ImportError)
    x, offset, mask, weight, bias = _inputs()
    for off in (torch.zeros_like(offset), offset.round()):
        ins = [t.clone().requires_grad_() for t in (x, off, mask, weight, bias)]
        ref_ins = [t.clone().requires_grad_() for t in (x, off, mask, weight, bias)]
        got = modulated_deform_conv2d(*ins, deform_groups=2, backend="pure")
        xr, offr, mr, wr, br = ref_ins
        want = ops.deform_conv2d(xr, offr, wr, br, padding=1, mask=mr)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
        grad_out = torch.randn_like(want)
        grads = torch.autograd.grad(got, ins, grad_out)
        ref_grads = torch.autograd.grad(want, ref_ins, grad_out)
        for a, b in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


def test_matches_torchvision_float32_eight_groups():
    ops = pytest.importorskip("torchvision.ops", exc_type=ImportError)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 32, 20, 30, generator=gen)
    offset = 3 * torch.randn(2, 2 * 8 * 9, 20, 30, generator=gen)
    mask = torch.rand(2, 8 * 9, 20, 30, generator=gen)
    weight = torch.randn(16, 32, 3, 3, generator=gen) / 17
    bias = torch.randn(16, generator=gen)
    got = modulated_deform_conv2d(x, offset, mask, weight, bias, deform_groups=8, backend="pure")
    want = ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    print(f"max |pure - torchvision| float32: {(got - want).abs().max().item():.3g}")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_dcnv2pack_shapes_and_basicsr_names():
    torch.manual_seed(0)
    m = DCNv2Pack(16, 8, deformable_groups=4)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "weight": (8, 16, 3, 3),
        "bias": (8,),
        "conv_offset.weight": (3 * 4 * 9, 16, 3, 3),
        "conv_offset.bias": (3 * 4 * 9,),
    }
    x = torch.randn(2, 16, 7, 9)
    out = m(x, torch.randn(2, 16, 7, 9))
    assert out.shape == (2, 8, 7, 9)
    # Zero-initialised offsets and mask logits: a plain conv with every tap weighted 0.5.
    plain = torch.nn.functional.conv2d(x, 0.5 * m.weight, m.bias, padding=1)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)


def test_dcnv2pack_warns_on_large_offsets(caplog):
    m = DCNv2Pack(8, 8, deformable_groups=2)
    x = torch.randn(1, 8, 5, 5)
    with caplog.at_level(logging.WARNING, logger=dcn.__name__):
        m(x, x)
    assert not caplog.records
    with torch.no_grad():
        m.conv_offset.bias.fill_(60.0)
    with caplog.at_level(logging.WARNING, logger=dcn.__name__):
        m(x, x)
    assert any("offset mean" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("which", ["x", "offset", "mask", "weight", "bias"])
def test_gradient_of_one_input_alone(which, chunking):
    # The backward pass skips the work for inputs that need no gradient: each gradient must
    # not depend on which other inputs ask for one.
    names = ("x", "offset", "mask", "weight", "bias")
    ins = dict(zip(names, _inputs(b=1, c=4, h=4, w=5), strict=True))
    all_in = {k: v.clone().requires_grad_() for k, v in ins.items()}
    out = modulated_deform_conv2d(*all_in.values(), deform_groups=2, backend="pure")
    grad_out = torch.randn_like(out)
    want = torch.autograd.grad(out, all_in[which], grad_out)[0]
    one = {k: v.clone().requires_grad_(k == which) for k, v in ins.items()}
    out = modulated_deform_conv2d(*one.values(), deform_groups=2, backend="pure")
    got = torch.autograd.grad(out, one[which], grad_out)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
