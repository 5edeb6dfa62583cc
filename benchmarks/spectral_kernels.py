"""The kernels behind the inference path, timed one by one at the seed model's sizes: the kept-mode
transforms (the training path's FFT + mode gather / scatter, dense DFT matrices, separable GEMMs) and
1x1 convolutions (the convolution kernel on NCHW, on channels-last, and the batched GEMM on NCHW), each
in fp32 and bf16. The crossovers chosen in ddo/models/spectral.py and ddo/models/fno_unet.py come from
this table. Prints a table and writes JSON.

    python benchmarks/spectral_kernels.py --json benchmarks/results/spectral_kernels.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

from ddo.allocator import tune_malloc
from ddo.models.spectral import (TRAINING_PATHS, FromModes, KeptModes, SpectralConv2d, dense_dft_matrices,
                                 mix_modes, separable_dft_matrices, separable_modes, separable_pixels)
from throughput import timed  # this directory is on the path when the script runs

# (grid, mh, mw, channels): the seed model's spectral layers (modes 16 at 32x32, 8 at 16x16, 4 at 8x8)
TRANSFORMS = [(32, 8, 9, 64), (32, 8, 9, 192), (16, 4, 5, 128), (16, 4, 5, 256), (8, 2, 3, 128), (64, 8, 9, 64)]
# (grid, modes, C_in, C_out): spectral layers timed with autograd (forward and backward, the training
# paths) and without (the mode mixing in three or four real products); 64 and 128: zero-shot sizes
LAYERS = [(8, 4, 128, 128), (16, 8, 128, 128), (32, 16, 64, 64), (32, 16, 192, 64), (64, 16, 64, 64), (128, 16, 32, 32)]
# (C_in, C_out, grid): its 1x1 convolutions
CONVS = [(128, 64, 32), (192, 64, 32), (256, 128, 16)]


def timed_ms(fn, repeat: int) -> float:
    """Median milliseconds of ``fn`` after 3 warm-up calls (throughput.py's timer)."""
    return 1e3 * timed(fn, torch.device("cpu"), 3, repeat)[0]


def layer_rows(train_rows: int, rows: int, dtypes, repeat: int) -> list[dict]:
    """Per layer of :data:`LAYERS`: forward + backward of each training path (dense DFT up to 32x32), and
    the inference path's mode mixing (``mix_modes``) in four and in three real products, per dtype."""
    out = []
    for h, modes, ci, co in LAYERS:
        layer = SpectralConv2d(ci, co, modes, modes // 2 + 1)
        mh, mw = min(layer.half, h // 2), min(layer.modes_width, h // 2 + 1)
        x = torch.randn(train_rows, ci, h, h, requires_grad=True)
        g = torch.randn(train_rows, co, h, h)
        r = {"kind": "layer", "grid": h, "modes": [mh, mw], "channels": [ci, co], "dtypes": [str(d)[6:] for d in dtypes]}
        for path in TRAINING_PATHS:
            if path != "dense" or h <= 32:
                r[f"train_{path}_ms"] = timed_ms(lambda: layer.convolve(x, path).backward(g), repeat)
        with torch.no_grad():
            for dt in dtypes:
                xm = separable_modes(torch.randn(rows, ci, h, h, dtype=dt), separable_dft_matrices(h, h, mh, mw, "cpu", dt))
                y = xm.new_empty(2, xm.shape[1], rows, co)
                for gauss, key in ((False, "mix4"), (True, "mix3")):
                    w = layer.mixing_weight(mh, mw, dt, gauss)
                    r[f"{key}_{str(dt)[6:]}_ms"] = timed_ms(lambda: mix_modes(xm, w, y), repeat)
        out.append(r)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=64, help="images per call")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--train-rows", type=int, default=32, help="images per training call (the seed model's micro-batch)")
    p.add_argument("--json", default="benchmarks/results/spectral_kernels.json")
    a = p.parse_args()
    tune_malloc({})
    torch.manual_seed(0)
    dtypes = [torch.float32] + ([torch.bfloat16] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else [])
    rows = []
    with torch.no_grad():
        for h, mh, mw, c in TRANSFORMS:
            for dt in dtypes:
                x = torch.randn(a.rows, c, h, h, dtype=dt)
                n = a.rows * c
                r = {"kind": "transform", "grid": h, "modes": [mh, mw], "channels": c, "dtype": str(dt)[6:]}
                if dt == torch.float32:  # the FFT path has no bf16 kernel on CPU
                    xs = KeptModes.apply(x, mh, mw, 1.0)
                    r["fft_forward_ms"] = timed_ms(lambda: KeptModes.apply(x, mh, mw, 1.0), a.repeat)
                    r["fft_inverse_ms"] = timed_ms(lambda: FromModes.apply(xs[:, :, 0], xs[:, :, 1], h, h, 1.0), a.repeat)
                fwd, inv = dense_dft_matrices(h, h, mh, mw, "cpu", dt)
                y = fwd @ x.reshape(n, h * h).T
                r["dense_forward_ms"] = timed_ms(lambda: fwd @ x.reshape(n, h * h).T, a.repeat)
                r["dense_inverse_ms"] = timed_ms(lambda: y.T @ inv, a.repeat)
                mats = separable_dft_matrices(h, h, mh, mw, "cpu", dt)
                ym = separable_modes(x, mats)
                r["separable_forward_ms"] = timed_ms(lambda: separable_modes(x, mats), a.repeat)
                r["separable_inverse_ms"] = timed_ms(lambda: separable_pixels(ym, h, h, mats), a.repeat)
                rows.append(r)
        for ci, co, h in CONVS:
            for dt in dtypes:
                x = torch.randn(a.rows, ci, h, h, dtype=dt)
                w = torch.randn(co, ci, 1, 1, dtype=dt)
                xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
                wb = w.view(1, co, ci).expand(a.rows, -1, -1)
                rows.append({"kind": "conv1x1", "channels": [ci, co], "grid": h, "dtype": str(dt)[6:],
                             "conv_nchw_ms": timed_ms(lambda: torch.nn.functional.conv2d(x, w), a.repeat),
                             "conv_channels_last_ms": timed_ms(lambda: torch.nn.functional.conv2d(xc, wc), a.repeat),
                             "to_channels_last_ms": timed_ms(lambda: x.contiguous(memory_format=torch.channels_last), a.repeat),
                             "bmm_nchw_ms": timed_ms(lambda: torch.bmm(wb, x.view(a.rows, ci, h * h)), a.repeat)})
    rows += layer_rows(a.train_rows, a.rows, dtypes, a.repeat)
    out = {"machine": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
           "torch": torch.__version__, "rows": a.rows, "train_rows": a.train_rows, "repeat": a.repeat, "results": rows}
    print(f"{a.rows} images per call, {out['cpu_threads']} threads, torch {torch.__version__}; median ms")
    print("| transform | dtype | FFT fwd / inv | dense fwd / inv | separable fwd / inv |\n|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "transform":
            fft = f"{r['fft_forward_ms']:.2f} / {r['fft_inverse_ms']:.2f}" if "fft_forward_ms" in r else "-"
            print(f"| {r['grid']}x{r['grid']}, modes {r['modes']}, {r['channels']} ch | {r['dtype']} | {fft} | "
                  f"{r['dense_forward_ms']:.2f} / {r['dense_inverse_ms']:.2f} | "
                  f"{r['separable_forward_ms']:.2f} / {r['separable_inverse_ms']:.2f} |")
    print("\n| 1x1 conv | dtype | conv NCHW | conv channels-last (+ conversion) | batched GEMM NCHW |\n|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "conv1x1":
            print(f"| {r['channels'][0]} -> {r['channels'][1]}, {r['grid']}x{r['grid']} | {r['dtype']} | "
                  f"{r['conv_nchw_ms']:.2f} | {r['conv_channels_last_ms']:.2f} (+ {r['to_channels_last_ms']:.2f}) | "
                  f"{r['bmm_nchw_ms']:.2f} |")
    print(f"\n| spectral layer | training ({a.train_rows} images, forward + backward): dense / FFT / separable | "
          f"mode mixing ({a.rows} images): four / three real products per complex one |\n|---|---|---|")
    for r in rows:
        if r["kind"] == "layer":
            tr = " / ".join(f"{r[f'train_{k}_ms']:.2f}" if f"train_{k}_ms" in r else "-" for k in ("dense", "fft", "separable"))
            inf = "; ".join(f"{d} {r[f'mix4_{d}_ms']:.2f} / {r[f'mix3_{d}_ms']:.2f}" for d in r["dtypes"])
            print(f"| {r['grid']}x{r['grid']}, modes {r['modes']}, {r['channels'][0]} -> {r['channels'][1]} | {tr} | {inf} |")
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
