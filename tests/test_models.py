import math

import pytest
import torch

from ddo.models import FNOUNet2d, SpectralConv2d, count_parameters, fourier_resample


def slow_spectral_conv(layer: SpectralConv2d, x: torch.Tensor) -> torch.Tensor:
    """Mode-by-mode loop over a full complex FFT: the obviously correct version."""
    b, ci, h, w = x.shape
    xf = torch.fft.rfft2(x)
    out = torch.zeros(b, layer.out_channels, h, w // 2 + 1, dtype=torch.complex64)
    wt = layer.complex_weight()  # (2 * half, modes_width, C_in, C_out)
    m = min(layer.half, h // 2)
    mw = min(layer.modes_width, w // 2 + 1)
    for ky in list(range(m)) + list(range(-m, 0)):
        row = ky % h
        wrow = ky if ky >= 0 else 2 * layer.half + ky
        for kx in range(mw):
            out[:, :, row, kx] = xf[:, :, row, kx] @ wt[wrow, kx]
    return torch.fft.irfft2(out, s=(h, w))


@pytest.mark.parametrize("size", [(8, 8), (16, 16), (12, 20), (32, 32)])
@pytest.mark.parametrize("modes", [(4, 3), (8, 8)])
def test_spectral_conv_matches_slow_reference(size, modes):
    layer = SpectralConv2d(3, 5, *modes)
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(layer(x), slow_spectral_conv(layer, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (16, 16), (15, 21), (33, 32), (64, 64)])
@pytest.mark.parametrize("modes", [(4, 3), (9, 8), (16, 16)])
def test_spectral_conv_training_paths_match_slow_reference_with_gradients(size, modes):
    layer = SpectralConv2d(3, 4, *modes)
    x = torch.randn(2, 3, *size, requires_grad=True)
    mh, mw = min(layer.half, size[0] // 2), min(layer.modes_width, size[1] // 2 + 1)
    ref = slow_spectral_conv(layer, x)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (x, layer.weight), g)
    for path in (layer._forward_dense, layer._forward_fft, layer._forward_fft_traceable, layer._forward_separable):
        y = path(x, mh, mw)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
        for got, want in zip(torch.autograd.grad(y, (x, layer.weight), g), ref_grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_spectral_conv_is_resolution_consistent():
    layer = SpectralConv2d(2, 2, 6, 6)
    # a band-limited input sampled at 32 and 64
    x32 = fourier_resample(torch.randn(1, 2, 8, 8), (32, 32))
    x64 = fourier_resample(x32, (64, 64))
    y32, y64 = layer(x32), layer(x64)
    torch.testing.assert_close(fourier_resample(y64, (32, 32)), y32, rtol=1e-4, atol=1e-5)


def test_fourier_resample_round_trip_of_band_limited_signal():
    x = fourier_resample(torch.randn(2, 3, 8, 8), (16, 16))
    torch.testing.assert_close(fourier_resample(fourier_resample(x, (32, 32)), (16, 16)), x, rtol=1e-4, atol=1e-5)


def test_fno_unet_shapes_and_zero_shot_resolution():
    net = FNOUNet2d(8, 8, 3, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, use_pos=True)
    t = torch.rand(2)
    for res in (16, 32, 64):
        assert net(torch.randn(2, 3, res, res), t).shape == (2, 3, res, res)
    assert net(torch.randn(2, 3, 24, 40), t).shape == (2, 3, 24, 40)


def test_fno_unet_rejects_unused_kwargs():
    net = FNOUNet2d(4, 4, 3, ch=8, ch_mult=(1,), num_res_blocks=1)
    with pytest.raises(TypeError, match="context_image"):
        net(torch.randn(1, 3, 8, 8), torch.rand(1), context_image=torch.zeros(1))


def expected_parameters(cin, ch, ch_mult, nrb, modes, norm=None, pointwise=False, use_pos=False) -> int:
    """The FNO-UNet's parameter count from its layout (the reference's, written out by hand): spectral
    weights ``2 cout cin m (m // 2 + 1)`` reals plus a bias, blocks with a scale-and-shift time
    projection and a bias-free 1x1 shortcut when the width changes, a spectral convolution after
    every resampling, modes ``min(modes, modes / 2^level)``."""
    gn = (lambda c: 2 * c) if norm == "group" else (lambda c: 0)

    def spectral(ci, co, m):
        return 2 * co * ci * m * (m // 2 + 1) + co + (ci * co if pointwise else 0)

    def block(ci, co, m):
        return gn(ci) + gn(co) + temb * 2 * co + 2 * co + spectral(ci, co, m) + spectral(co, co, m) + (
            ci * co if ci != co else 0)

    temb = 4 * ch
    total = ch * temb + temb + temb * temb + temb + (cin + 2 * use_pos) * ch + ch
    res, skips, cur = modes, [ch], ch
    for level, mult in enumerate(ch_mult):
        for _ in range(nrb):
            total, cur = total + block(cur, ch * mult, min(res, modes)), ch * mult
            skips.append(cur)
        if level != len(ch_mult) - 1:
            res //= 2
            total += spectral(cur, cur, min(res, modes))
            skips.append(cur)
    total += 2 * block(cur, cur, min(res, modes))
    for level, mult in reversed(list(enumerate(ch_mult))):
        for _ in range(nrb + 1):
            total, cur = total + block(cur + skips.pop(), ch * mult, min(res, modes)), ch * mult
        if level != 0:
            total += spectral(cur, cur, min(res, modes))
            res *= 2
    return total + gn(cur) + cur * cin + cin


@pytest.mark.parametrize("kw", [dict(cin=1, ch=8, ch_mult=(1,), nrb=1, modes=4),
                                dict(cin=3, ch=16, ch_mult=(1, 2), nrb=1, modes=8, norm="group", pointwise=True),
                                dict(cin=3, ch=32, ch_mult=(1, 2), nrb=1, modes=12, norm="group", pointwise=True,
                                     use_pos=True)])
def test_parameter_count_follows_the_layout(kw):
    net = FNOUNet2d(kw["modes"], kw["modes"], kw["cin"], ch=kw["ch"], ch_mult=kw["ch_mult"],
                    num_res_blocks=kw["nrb"], norm=kw.get("norm"), use_pointwise_op=kw.get("pointwise", False),
                    use_pos=kw.get("use_pos", False))
    assert count_parameters(net) == expected_parameters(**kw)


@pytest.mark.slow
def test_seed_configuration_has_the_reference_models_size():
    """The seed preset as the reference's CIFAR-10 script builds it (no base_resolution): 42.6 M."""
    net = FNOUNet2d(16, 16, 3, ch=64, ch_mult=(1, 2, 2), num_res_blocks=2)
    assert count_parameters(net) == expected_parameters(3, 64, (1, 2, 2), 2, 16)
    assert math.isclose(count_parameters(net) / 1e6, 42.6, abs_tol=0.05)


@pytest.mark.parametrize("h,w,mh,mw", [(8, 8, 4, 5), (8, 8, 2, 3), (7, 9, 3, 5), (6, 10, 3, 6), (5, 4, 1, 3)])
def test_mode_transforms_have_the_gradients_of_their_definitions(h, w, mh, mw):
    """The hand-written backward passes of the truncated transforms (float64 finite differences),
    including odd sizes, the Nyquist column and a scale."""
    from ddo.models.spectral import _FromModes, _KeptModes

    x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: _KeptModes.apply(x, mh, mw, 0.7), (x,))
    yr, yi = (torch.randn(2 * mh, mw, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda a, b: _FromModes.apply(a, b, h, w, 1.3), (yr, yi))
    # and their values: kept modes of rfft2, and irfft2 of the placed modes
    xs = _KeptModes.apply(x, mh, mw, 0.7)
    ref = 0.7 * torch.fft.rfft2(x)
    torch.testing.assert_close(torch.complex(xs[:mh, :, 0], xs[:mh, :, 1]), ref[:, :, :mh, :mw].permute(2, 3, 0, 1))
    torch.testing.assert_close(torch.complex(xs[mh:, :, 0], xs[mh:, :, 1]), ref[:, :, h - mh:, :mw].permute(2, 3, 0, 1))
    spec = torch.zeros(2, 3, h, w // 2 + 1, dtype=torch.complex128)
    y = torch.complex(yr, yi).permute(2, 3, 0, 1)
    spec[:, :, :mh, :mw], spec[:, :, h - mh:, :mw] = y[:, :, :mh], y[:, :, mh:]
    torch.testing.assert_close(_FromModes.apply(yr, yi, h, w, 1.3), 1.3 * torch.fft.irfft2(spec, s=(h, w)))


def plain_fourier_resample(x, h2, w2):
    """Fourier resampling written with torch.fft and autograd only (the reference)."""
    h, w = x.shape[-2:]
    m, mw = min(h, h2) // 2, min(w, w2) // 2 + 1
    xf = torch.fft.rfft2(x, norm="forward")
    out = torch.zeros(*x.shape[:2], h2, w2 // 2 + 1, dtype=xf.dtype)
    out[:, :, :m, :mw], out[:, :, h2 - m:, :mw] = xf[:, :, :m, :mw], xf[:, :, h - m:, :mw]
    return torch.fft.irfft2(out, s=(h2, w2), norm="forward")


@pytest.mark.parametrize("src,dst", [((8, 8), (16, 16)), ((16, 16), (8, 8)), ((9, 7), (16, 12)), ((32, 32), (16, 16)),
                                     ((12, 20), (6, 10)), ((16, 16), (32, 32))])
def test_fourier_resample_matches_plain_reference_with_gradients(src, dst):
    """Both the eager path (hand-written adjoints) and the one torch.compile traces."""
    from ddo.models.spectral import _fourier_resample_traceable

    x = torch.randn(2, 3, *src, requires_grad=True)
    ref = plain_fourier_resample(x, *dst)
    g = torch.randn_like(ref)
    ref_grad = torch.autograd.grad(ref, x, g)[0]
    for y in (fourier_resample(x, dst), _fourier_resample_traceable(x, *dst)):
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], ref_grad, rtol=1e-4, atol=1e-5)


# ---- the inference path (no autograd): GEMM transforms on views, folded bias and residual ----

@pytest.mark.parametrize("h,w", [(8, 8), (15, 21), (32, 32), (33, 32), (64, 40)])
@pytest.mark.parametrize("mh,mw", [(4, 3), (8, 9)])
def test_separable_transforms_equal_the_fft_on_the_kept_modes(h, w, mh, mw):
    from ddo.models.spectral import separable_dft_matrices, separable_modes, separable_pixels

    mh, mw = min(mh, h // 2), min(mw, w // 2 + 1)
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    mats = separable_dft_matrices(h, w, mh, mw, "cpu", torch.float64)
    got = separable_modes(x, mats)                                      # (2, 2mh * mw, B, C)
    spec = torch.fft.rfft2(x)
    kept = torch.cat([spec[:, :, :mh, :mw], spec[:, :, h - mh:, :mw]], dim=2)          # (B, C, 2mh, mw)
    want = torch.stack([kept.real, kept.imag]).permute(0, 3, 4, 1, 2).reshape(2, 2 * mh * mw, 2, 3)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    full = torch.zeros_like(spec)
    full[:, :, :mh, :mw], full[:, :, h - mh:, :mw] = spec[:, :, :mh, :mw], spec[:, :, h - mh:, :mw]
    torch.testing.assert_close(separable_pixels(got, h, w, mats), torch.fft.irfft2(full, s=(h, w)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [(8, 8), (16, 16), (12, 20), (32, 32), (33, 32), (64, 64)])
@pytest.mark.parametrize("modes", [(4, 3), (9, 8), (16, 16)])
def test_inference_path_equals_the_autograd_path_with_bias_modulation_and_residual(size, modes):
    layer = SpectralConv2d(3, 4, *modes)
    x, bias, residual = torch.randn(2, 3, *size), torch.randn(4), torch.randn(2, 4, *size)
    scale, shift = torch.randn(2, 4), torch.randn(2, 4)
    conv = slow_spectral_conv(layer, x) + bias[:, None, None]
    want = conv * (1 + scale[:, :, None, None]) + shift[:, :, None, None] + residual
    with torch.enable_grad():
        torch.testing.assert_close(layer(x, bias, residual, (scale, shift)), want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, bias, residual, (scale, shift)), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer(x, bias, residual), conv + residual, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer(x) + bias[:, None, None], conv, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm,pointwise", [(None, False), ("group", True), (None, True)])
def test_fno_unet_inference_path_equals_its_autograd_path(norm, pointwise):
    """The whole network without autograd (GEMM transforms, folded bias / scale-shift / residual, 1x1
    GEMMs) against the same network with autograd (FFT and dense paths, plain layers), at two sizes."""
    torch.manual_seed(0)
    net = FNOUNet2d(8, 8, 3, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, use_pos=True, norm=norm,
                    use_pointwise_op=pointwise)
    for res in (32, 24):
        z, t = torch.randn(2, 3, res, res), torch.rand(2)
        want = net(z, t)
        with torch.no_grad():
            torch.testing.assert_close(net(z, t), want.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("src,dst", [((32, 32), (16, 16)), ((16, 16), (32, 32)), ((15, 21), (8, 40)), ((33, 32), (64, 17))])
def test_fourier_resample_inference_path_equals_the_autograd_path(src, dst):
    x = torch.randn(2, 3, *src)
    with torch.no_grad():
        got = fourier_resample(x, dst)
    torch.testing.assert_close(got, fourier_resample(x.requires_grad_(), dst).detach(), rtol=1e-4, atol=1e-5)


def test_conv1x1_is_the_convolution_with_and_without_autograd():
    from ddo.models.fno_unet import Conv1x1

    for bias in (True, False):
        conv = Conv1x1(6, 5, bias=bias)
        x = torch.randn(3, 6, 7, 9, requires_grad=True)
        want = torch.nn.functional.conv2d(x, conv.weight, conv.bias)
        with torch.no_grad():
            torch.testing.assert_close(conv(x), want, rtol=1e-5, atol=1e-6)
        g = torch.randn_like(want)
        params = (x, conv.weight) + ((conv.bias,) if bias else ())
        got = conv(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for a, b in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(want, params, g)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert set(conv.state_dict()) == ({"weight", "bias"} if bias else {"weight"})


@pytest.mark.parametrize("gauss", [False, True])
def test_mode_mixing_in_three_or_four_real_products_is_the_complex_product(gauss):
    from ddo.models.spectral import mix_modes

    torch.manual_seed(0)
    layer = SpectralConv2d(5, 3, 8, 5)
    mh, mw = 4, 5
    xm = torch.randn(2, 2 * mh * mw, 6, 5)
    out = torch.full((2, 2 * mh * mw, 6, 3), float("nan"))
    mix_modes(xm, layer.mixing_weight(mh, mw, torch.float32, gauss), out)
    want = torch.einsum("mbi,mio->mbo", torch.complex(xm[0], xm[1]), layer.complex_weight().reshape(-1, 5, 3))
    torch.testing.assert_close(torch.complex(out[0], out[1]), want, rtol=1e-5, atol=1e-5)


def test_convolve_runs_each_named_path_and_refuses_others():
    layer = SpectralConv2d(3, 4, 8, 5)
    x = torch.randn(2, 3, 32, 32)
    ref = slow_spectral_conv(layer, x)
    for path in ("dense", "separable", "fft"):
        torch.testing.assert_close(layer.convolve(x, path), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown path 'gemm'; known: dense, separable, fft"):
        layer.convolve(x, "gemm")


def test_cached_mixing_weights_follow_the_parameter():
    """The inference path keeps a re-laid-out copy of the weights; an in-place update or a loaded state
    must be seen by the next call."""
    layer = SpectralConv2d(3, 4, 8, 5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y1 = layer(x)
        layer.weight.mul_(2.0)
        torch.testing.assert_close(layer(x), 2 * y1, rtol=1e-5, atol=1e-6)
        other = SpectralConv2d(3, 4, 8, 5)
        layer.load_state_dict(other.state_dict())
        torch.testing.assert_close(layer(x), other(x), rtol=0, atol=0)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bf16 on this CPU")
@pytest.mark.parametrize("size", [(16, 16), (32, 32)])
def test_bf16_inference_of_one_spectral_layer_is_within_bf16_rounding(size):
    """bf16 transforms and mixing (the dense path at 16x16, the separable one at 32x32): the error is that
    of rounding inputs, weights and matrices to 8 bits of mantissa, ~2^-8 of the output's scale."""
    torch.manual_seed(0)
    layer = SpectralConv2d(16, 16, 8, 5)
    x, bias = torch.randn(4, 16, *size), torch.randn(16)
    with torch.no_grad():
        ref = layer(x, bias)
        layer.mix_dtype = torch.bfloat16
        out = layer(x.bfloat16(), bias.bfloat16())
    assert out.dtype == torch.bfloat16
    err = float((out.float() - ref).norm() / ref.norm())
    assert 1e-4 < err < 5e-3, err
