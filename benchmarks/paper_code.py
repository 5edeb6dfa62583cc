"""The paper's own code beside this package, in one process: training and sampling throughput of its
FNO-UNet at the size of the `seed` preset, against `seed` here. Prints a table and writes JSON.

    python benchmarks/paper_code.py --paper-code <checkout of lim0606/ddo> --json benchmarks/results/paper_code.json

The paper's model is built as its `main.py` builds it with `--model fnounet2d --modes 16 --ch 64
--ch_mult 1,2,2 --num_res_blocks 2 --input_dim 3` and its other defaults (coordinate grid on, no norm,
no pointwise op: 42.6 M parameters), its diffusion as `main.py`'s defaults for the README's command
(vp_cosine, sine blurring 0.05..0.25, exponential-kernel noise). Its training step is its own `dsm` loss
on the whole batch, backward, Adam wrapped in its EMA; its sampling step its own `denoise_step` on the
whole batch. Its modules are imported from the checkout (nothing of it is copied here); `.cuda()` calls
of its `main.py` are avoided by building the objects directly. Here: `ddo.train.train` (micro-batches,
gradient clipping, Adam, EMA, the data loader) and `denoise_step` in calls of `--sample-rows` rows.
Both sides' random inputs; medians of `--steps` steps after 2 warm-up steps, in `--rounds` alternating
rounds; the reported ratios are medians over rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import measure, timed  # noqa: E402  (this directory)

from ddo.allocator import tune_malloc  # noqa: E402
from ddo.commands import native_bf16_cpu  # noqa: E402
from ddo.config import resolve  # noqa: E402
from ddo.plugins import load_host  # noqa: E402


def paper_objects(tree: str, resolution: int, channels: int):
    """The paper's ``(gen_sde, optimizer)`` built from its modules in ``tree`` as its ``main.py`` does."""
    from torch import nn

    sys.path.insert(0, os.path.abspath(tree))
    try:
        from lib.diffusion import BlurringDiffusion, DenoisingDiffusion
        from lib.models.fourier_unet import FNOUNet2d
        from utils.ema import EMA
    except ImportError as e:
        raise SystemExit(f"--paper-code {tree}: cannot import the paper's modules ({e}); pass a checkout of lim0606/ddo")

    class Model(nn.Module):  # main.py's wrapper: forwards (x, temp, v) to the network
        def __init__(self, **kw):
            super().__init__()
            self.model = FNOUNet2d(**kw)

        in_channels = property(lambda self: self.model.in_channels)

        def forward(self, x, temp, v, **kw):
            return self.model(x=x, temp=temp, v=v, **kw)

    gp = argparse.Namespace(device="cpu", exponent=2.0, length_scale=0.05, sigma=1.0, modes_height=None,
                            modes_width=None, modes=None, window=None)
    sde = BlurringDiffusion(dim=2, ch=channels, ns_method="vp_cosine", disp_method="sine", gp_type="exponential",
                            gp_config=gp, disp_config=argparse.Namespace(sigma_blur_min=0.05, sigma_blur_max=0.25))
    net = Model(modes_height=16, modes_width=16, in_channels=channels, in_height=resolution, ch=64, ch_mult=(1, 2, 2),
                num_res_blocks=2, dropout=0.0, act=nn.SiLU(), use_pos=True, use_radial=False, resamp_with_conv=True,
                use_pointwise_op=False, norm=None)
    gen_sde = DenoisingDiffusion(sde, model=net, timestep_sampler="low_discrepancy", use_clip=False, weight_method=None)
    opt = EMA(torch.optim.Adam(gen_sde.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0), ema_decay=0.999)
    # its EMA wrapper skips Optimizer.__init__, whose hook tables torch >= 2 reads in step()
    opt._optimizer_step_pre_hooks, opt._optimizer_step_post_hooks = {}, {}
    return gen_sde, opt


def time_paper(tree: str, batch: int, steps: int, resolution: int = 32, channels: int = 3, train: bool = True,
               bf16: bool = False) -> dict:
    """Images/s of the paper's training step and image-steps/s of its sampling step (fp32; with ``bf16``
    also its sampling step under bf16 autocast, its code having no bf16 path of its own)."""
    gen_sde, opt = paper_objects(tree, resolution, channels)
    g = torch.arange(resolution) / resolution  # main.py's coordinate grid: rows / H, columns / H
    v = torch.stack([g[:, None].expand(resolution, resolution), g[None, :].expand(resolution, resolution)])
    v = v[None].repeat(batch, 1, 1, 1)
    x = torch.rand(batch, channels, resolution, resolution) * 2 - 1
    out = {"parameters": sum(p.numel() for p in gen_sde._model.parameters())}

    def train_step():
        gen_sde.train()
        opt.zero_grad()
        gen_sde.dsm(x, v).mean().backward()
        opt.step()

    if train:
        med, all_ = timed(train_step, torch.device("cpu"), 2, steps)
        out.update(train_img_per_s=batch / med, train_step_s_all=all_)
    gen_sde.eval()
    with torch.no_grad():
        z = gen_sde.gp.sample(batch, resolution, ch=channels)
    t = torch.full((batch,), 0.5)

    def sample_step():
        with torch.no_grad():
            gen_sde.denoise_step(z, t, num_steps=250, v=v, return_all=True)

    med, all_ = timed(sample_step, torch.device("cpu"), 2, steps)
    out.update(sample_img_steps_per_s=batch / med, sample_step_s_all=all_)
    if bf16:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["sample_img_steps_per_s_bf16"] = batch / timed(sample_step, torch.device("cpu"), 2, steps)[0]
    return out


def _ours(config, host, a, bf16: bool) -> dict:
    r = {}
    if not a.no_train:
        m = measure(config, host, torch.device("cpu"), a.batch_size, a.steps, micro_batch=a.micro_batch, train=True)
        r.update(train_img_per_s=m["train_img_per_s"], train_step_s_all=m["train_step_s_all"])
    m = measure(config, host, torch.device("cpu"), a.batch_size, a.steps, micro_batch=a.sample_rows, train=False,
                bf16_sampling=bf16)
    r.update({k: m[k] for k in ("sample_img_steps_per_s", "sample_step_s_all", "parameters")})
    if bf16:
        r["sample_img_steps_per_s_bf16"] = m["sample_img_steps_per_s_bf16"]
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paper-code", required=True, metavar="TREE", help="a checkout of lim0606/ddo")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported) after 2 warm-up steps")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (paper's code, then this package); "
                   "the ratios are medians over rounds, so that a slow spell of the machine hits both sides")
    p.add_argument("--micro-batch", type=int, help="this package's training micro-batch (--grad-accum); default "
                   "the whole batch, as `ddo train` runs by default")
    p.add_argument("--sample-rows", type=int, default=64, help="this package's rows per network call when sampling")
    p.add_argument("--no-train", action="store_true", help="time sampling only")
    p.add_argument("--json", default="benchmarks/results/paper_code.json")
    a = p.parse_args()
    a.micro_batch = a.micro_batch or a.batch_size
    tune_malloc({})
    torch.manual_seed(0)
    bf16 = native_bf16_cpu()  # emulated bf16 is slower than fp32 on both sides: not timed there
    host = load_host()
    config = resolve({"conditioning": "none"}, "seed", host)
    rounds = []
    for _ in range(a.rounds):
        paper = time_paper(a.paper_code, a.batch_size, a.steps, train=not a.no_train, bf16=bf16)
        ours = _ours(config, host, a, bf16)
        ratios = {k: ours[k] / paper[k] for k in ours if k in paper and k.endswith("_per_s")}
        if bf16:
            ratios["sample_bf16_over_paper_fp32"] = ours["sample_img_steps_per_s_bf16"] / paper["sample_img_steps_per_s"]
        rounds.append({"paper": paper, "ours": ours, "ratios": ratios})
        print("round:", ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()), flush=True)
    med = {k: statistics.median(r["ratios"][k] for r in rounds) for k in rounds[0]["ratios"]}
    rates = {side: {k: statistics.median(r[side][k] for r in rounds) for k in rounds[0][side] if k.endswith("_per_s")}
             for side in ("paper", "ours")}
    out = {"machine": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
           "torch": torch.__version__, "native_bf16": bf16, "batch_size": a.batch_size, "steps": a.steps,
           "micro_batch": a.micro_batch, "sample_rows": a.sample_rows,
           "parameters": {"paper": rounds[0]["paper"]["parameters"], "ours": rounds[0]["ours"]["parameters"]},
           "median_rates": rates, "median_ratios": med, "rounds": rounds}
    print(f"{out['machine']}, {out['cpu_threads']} threads, torch {torch.__version__}, batch {a.batch_size}, "
          f"parameters: paper {out['parameters']['paper'] / 1e6:.1f} M, here {out['parameters']['ours'] / 1e6:.1f} M; "
          f"medians of {a.rounds} rounds")
    print("| | paper's code | this package | ratio |\n|---|---|---|---|")
    for k, v in med.items():
        if k in rates["paper"]:
            print(f"| {k} | {rates['paper'][k]:.1f} | {rates['ours'][k]:.1f} | {v:.2f}x |")
    if not bf16:
        print("bf16: not timed (this CPU has no native bf16; emulated bf16 is slower than fp32)")
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
