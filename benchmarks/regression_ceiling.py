"""How much can a network learn over biharmonic interpolation in minutes of CPU? A diagnostic.

The one-call posterior mean of a conditional diffusion model (``ddo-x0``) is, at ``t = 1``, a
regression of the image on its context. This script trains that regression *alone*, without any
diffusion: a plain convolutional UNet (channels-last) that reads the biharmonic inpainting, the
observation mask and the context image and predicts a residual over the biharmonic inpainting
(zero-initialised, so it starts exactly at biharmonic). Dihedral augmentation (the biharmonic
inpainting of a rotated/flipped context is the rotated/flipped inpainting), Adam with warm-up and a
cosine decay over the time budget, EMA weights. Same data, masks and metric as ``ddo demo``.

If this regression does not beat biharmonic within a budget, the diffusion model's posterior mean,
which must learn the same map while also learning to denoise, is not expected to either.

    python benchmarks/regression_ceiling.py --minutes 8 --json results_regression_ceiling.json
"""
import argparse
import json
import math
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from ddo.plugins import load_host
from ddo_conditional.conditioning import BiharmonicInterpConditioning
from ddo_conditional.datasets import create_observation_mask_batched, create_query_mask_batched
from ddo_conditional.evaluate import apply_dihedral
from ddo_conditional.metrics import psnr


def _block(ci: int, co: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, 3, padding=1), nn.GroupNorm(8, co), nn.SiLU(),
                         nn.Conv2d(co, co, 3, padding=1), nn.GroupNorm(8, co), nn.SiLU())


class ResidualUNet(nn.Module):
    """Three levels (``w, 2w, 4w``), average-pool down, nearest up, skip concatenation."""

    def __init__(self, width: int, in_ch: int = 7, out_ch: int = 3):
        super().__init__()
        w = width
        self.e1, self.e2, self.e3 = _block(in_ch, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.d2, self.d1 = _block(6 * w, 2 * w), _block(3 * w, w)
        self.out = nn.Conv2d(w, out_ch, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h1 = self.e1(x)
        h2 = self.e2(F.avg_pool2d(h1, 2))
        h3 = self.e3(F.avg_pool2d(h2, 2))
        u2 = self.d2(torch.cat([F.interpolate(h3, scale_factor=2.0), h2], 1))
        u1 = self.d1(torch.cat([F.interpolate(u2, scale_factor=2.0), h1], 1))
        return x[:, :3] + self.out(u1)


def load_split(host, split: str, resolution: int) -> dict:
    """Every item of the split with its fixed masks and biharmonic inpainting, stacked."""
    wrapper = BiharmonicInterpConditioning({"resolution": resolution})
    ds = wrapper.wrap_dataset(host.datasets.get("natural-patches")(split=split, resolution=resolution), split)
    items = [ds[i] for i in range(len(ds))]
    d = {k: torch.stack([it[k] for it in items]) for k in ("image", "context_dense", "context_indices", "query_indices")}
    h = w = resolution
    obs = create_observation_mask_batched(d["context_indices"], h, w, torch.float32)
    d["inputs"] = torch.cat([d["context_dense"], obs, d["image"] * obs], 1)
    d["query_mask"] = create_query_mask_batched(d["query_indices"], h, w, torch.float32)
    return d


def query_psnr(pred: torch.Tensor, d: dict) -> float:
    """Mean over images of the query-pixel PSNR, predictions in ``[-1, 1]``."""
    return float(psnr((pred.clamp(-1, 1) + 1) / 2, (d["image"] + 1) / 2, d["query_mask"]).mean())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", choices=("mse", "log-mse"), default="mse",
                   help="log-mse: mean over images of log(per-image MSE), what mean PSNR rewards")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="benchmarks/results/regression_ceiling.json")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    host = load_host()
    t0 = time.time()
    train, test = load_split(host, "train", 32), load_split(host, "test", 32)
    prep_s = time.time() - t0
    net = ResidualUNet(a.width).to(memory_format=torch.channels_last)
    params = sum(q.numel() for q in net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.995))
    budget, step, losses = a.minutes * 60, 0, []
    t0 = time.time()
    while (elapsed := time.time() - t0) < budget:
        lr = a.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(train["image"]), (a.batch_size,))
        k, flip = int(torch.randint(0, 4, ())), bool(torch.randint(0, 2, ()))
        x = apply_dihedral(train["inputs"][idx], k, flip).contiguous(memory_format=torch.channels_last)
        y = apply_dihedral(train["image"][idx], k, flip)
        per_image = ((net(x) - y) ** 2).flatten(1).mean(1)
        loss = per_image.mean() if a.loss == "mse" else torch.log(per_image + 1e-6).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update_parameters(net)
        losses.append(float(loss.detach()))
        step += 1
    train_s = time.time() - t0
    sub = {k: v[:512] for k, v in train.items()}
    with torch.no_grad():
        res = {
            "test": {"regression_ema": query_psnr(ema.module(test["inputs"]), test),
                     "regression": query_psnr(net(test["inputs"]), test),
                     "biharmonic": query_psnr(test["context_dense"], test)},
            "train_first_512": {"regression_ema": query_psnr(ema.module(sub["inputs"]), sub),
                                "biharmonic": query_psnr(sub["context_dense"], sub)},
        }
    out = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "minutes": a.minutes, "width": a.width, "parameters": params,
           "batch_size": a.batch_size, "lr": a.lr, "loss": a.loss, "seed": a.seed, "steps": step,
           "images_per_s": round(step * a.batch_size / train_s, 1), "prep_seconds": round(prep_s, 1),
           "test_images": len(test["image"]), "final_loss_median_last_50": float(torch.tensor(losses[-50:]).median()),
           "psnr_query": res}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"regression UNet ({params:,} params, {step} steps, {out['images_per_s']} img/s, {a.minutes:g} min, "
          f"{torch.get_num_threads()} threads)")
    print("| split | regression (EMA) | biharmonic | margin |\n|---|---|---|---|")
    for split, r in res.items():
        print(f"| {split} | {r['regression_ema']:.2f} | {r['biharmonic']:.2f} | {r['regression_ema'] - r['biharmonic']:+.2f} |")


if __name__ == "__main__":
    main()
