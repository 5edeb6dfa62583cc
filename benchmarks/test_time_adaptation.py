"""Self-supervised test-time adaptation of the one-call posterior mean on the test images' context.

The demo's model beats biharmonic by much more on its training photographs than on the held-out
ones (`generalization_gap.py`). The only data of the test photographs a user has is their context,
so this benchmark fine-tunes the model on that alone: each test crop's context is split at random
into a sub-context (80%) and held-out context points (20%); the network gets the sub-context (and
its biharmonic inpainting, as in training) and is trained at ``t = 1`` to predict the held-out
points (their squared error, weighted per item by ``1 / (biharmonic's error there + 1e-4)`` as
`x0-mse-relative` weights images). Each step also takes a batch of training crops under the
model's own loss, so the network does not drift from its task. No query pixel is used anywhere.

Then the symmetrised one-call estimate (`ddo-x0`, as `ddo demo` reports it) is scored against
biharmonic on every test crop, per photograph, for:

- `base`: the model as trained;
- `adapt-all`: adapted on the context of all test crops (transductive);
- `adapt-on(P)`: adapted on the crops of photograph P only. Scored on P's own crops ("own") and on
  the other photograph's ("cross"). Test crops of one photograph are cut at three scales, so a query
  pixel of one crop can be covered by another crop's context: the "own" gain can be recall of the
  photograph itself; the "cross" score cannot, and tells adaptation to a domain apart from that.

    python benchmarks/test_time_adaptation.py --checkpoint runs/demo/checkpoint.pt --json tta.json
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, default_collate

from ddo.allocator import tune_malloc
from ddo.models import coordinate_grid
from ddo.plugins import load_host
from ddo.train import load_model, make_optimizer
from ddo_conditional.datasets import biharmonic_context, create_query_mask_batched
from ddo_conditional.evaluate import posterior_mean_one_call
from ddo_conditional.losses import x0_mse_relative_loss
from ddo_conditional.metrics import psnr


def split_items(item: dict, draws: int, rng: np.random.Generator, keep: float = 0.8) -> list[dict]:
    """``draws`` self-supervised items of one test item: sub-context -> held-out context points."""
    _, h, w = item["image"].shape
    idx, vals = item["context_indices"], item["context_values"]
    k = int(round(keep * len(idx)))
    out = []
    for _ in range(draws):
        perm = torch.from_numpy(rng.permutation(len(idx)))
        sub, held = perm[:k], perm[k:]
        dense = biharmonic_context(idx[sub], vals[sub], h, w)
        # "image" is a stand-in: the loss reads the network's input image only through the t = 1 diffusion
        out.append({"image": dense, "index": item["index"], "context_indices": idx[sub], "context_values": vals[sub],
                    "query_indices": idx[held], "query_values": vals[held], "context_dense": dense})
    return out


def held_out_loss(gen_sde, wrapper, batch: dict, device, floor: float = 1e-4) -> torch.Tensor:
    """Squared error of the ``t = 1`` estimate on the held-out context points, relative-weighted."""
    x = batch["image"].to(device)
    b, c, h, w = x.shape
    kwargs = wrapper.model_kwargs(batch, device)
    t = torch.ones(b, device=device)
    z = gen_sde.forward_diffusion.sample(t, x)
    x0 = gen_sde.x0(z, t, coordinate_grid(b, h, w, device), **kwargs)
    qi = batch["query_indices"].to(device)
    truth = batch["query_values"].to(device)                                  # (B, Q, C)
    pick = lambda img: img.flatten(2).gather(2, qi.unsqueeze(1).expand(b, c, -1)).transpose(1, 2)
    err = ((pick(x0) - truth) ** 2).flatten(1).mean(1)
    weight = 1.0 / (((pick(x) - truth) ** 2).flatten(1).mean(1) + floor)
    return (err * weight / weight.mean()).mean()


def adapt(gen_sde, wrapper, items: list[dict], train_ds, *, steps: int, batch: int, lr: float, seed: int, device):
    """Fine-tune a copy of the network; returns it (evaluation mode)."""
    gen = copy.copy(gen_sde)
    gen.network = copy.deepcopy(gen_sde.network).train()
    opt = make_optimizer(gen.network.parameters(), lr, torch.device(device))
    g = torch.Generator().manual_seed(seed)
    own_loss = x0_mse_relative_loss()
    for _ in range(steps):
        pick = torch.randint(len(items), (batch,), generator=g).tolist()
        loss = held_out_loss(gen, wrapper, default_collate([items[i] for i in pick]), device)
        tb = default_collate([train_ds[i] for i in torch.randint(len(train_ds), (batch,), generator=g).tolist()])
        x = tb["image"].to(device)
        v = coordinate_grid(x.shape[0], x.shape[-2], x.shape[-1], device)
        loss = loss + own_loss(gen, {**tb, "image": x}, v, wrapper.model_kwargs(tb, device))["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.network.parameters(), 1.0)
        opt.step()
    gen.network.eval()
    return gen


@torch.no_grad()
def score(gen_sde, wrapper, ds, device, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per-image query PSNR of the symmetrised one-call estimate and of biharmonic (``context_dense``)."""
    model, bih = [], []
    g = torch.Generator().manual_seed(0)
    for b in DataLoader(ds, batch_size=batch, shuffle=False):
        x = b["image"].to(device)
        q = create_query_mask_batched(b["query_indices"].to(device), *x.shape[-2:], x.dtype)
        est = posterior_mean_one_call(gen_sde, wrapper.model_kwargs(b, device), x.shape, generator=g, symmetrize=True)
        for pred, out in ((est.clamp(-1, 1), model), (b["context_dense"].to(device), bih)):
            out.append(psnr((pred + 1) / 2, (x + 1) / 2, q))
    return torch.cat(model).numpy(), torch.cat(bih).numpy()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--draws", type=int, default=8, help="self-supervised splits per test crop")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--train-crops", type=int, default=512, help="training crops mixed into every step")
    p.add_argument("--every", type=int, default=1, help="use every n-th test crop (1: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="benchmarks/results/test_time_adaptation.json")
    a = p.parse_args()
    tune_malloc()  # as `ddo` commands do: freed large blocks stay in the heap (benchmarks/README.md)
    torch.manual_seed(a.seed)
    device = "cpu"
    host = load_host()
    gen_sde, wrapper, cfg = load_model(a.checkpoint, host)
    res = cfg["resolution"]
    crops = host.datasets.get("natural-patches")(split="test", resolution=res)
    keep = list(range(0, len(crops), a.every))
    sources = np.array(crops.sources)[keep]
    test = Subset(wrapper.mask_dataset(crops), keep)
    train_full = wrapper.mask_dataset(host.datasets.get("natural-patches")(split="train", resolution=res))
    train = Subset(train_full, np.random.default_rng(a.seed).permutation(len(train_full))[:a.train_crops].tolist())

    t0 = time.time()
    rng = np.random.default_rng(a.seed)
    items = [split_items(test[i], a.draws, rng) for i in range(len(test))]
    prep_s = time.time() - t0
    print(f"{sum(map(len, items))} self-supervised items from {len(test)} test crops in {prep_s:.0f} s", flush=True)

    photos = sorted(set(sources))
    rows, timings = {}, {}
    base, bih = score(gen_sde, wrapper, test, device)
    rows["base"] = base
    variants = [("adapt-all", photos)] + [(f"adapt-on({p})", [p]) for p in photos]
    for name, on in variants:
        chosen = [it for i, its in enumerate(items) if sources[i] in on for it in its]
        t0 = time.time()
        adapted = adapt(gen_sde, wrapper, chosen, train, steps=a.steps, batch=a.batch_size, lr=a.lr, seed=a.seed,
                        device=device)
        timings[name] = round(time.time() - t0, 1)
        rows[name] = score(adapted, wrapper, test, device)[0]
        print(f"{name}: adapted on {len(chosen)} items in {timings[name]} s", flush=True)

    def margins(psnrs):
        d = psnrs - bih
        return {"all": float(d.mean()), **{p: float(d[sources == p].mean()) for p in photos}}

    table = {name: margins(v) for name, v in rows.items()}
    own = {p: table[f"adapt-on({p})"][p] for p in photos}
    cross = {p: sum(table[f"adapt-on({q})"][p] for q in photos if q != p) / max(1, len(photos) - 1) for p in photos}
    print(f"| model | margin over biharmonic, all {len(test)} | " + " | ".join(photos) + " |")
    print("|---" * (2 + len(photos)) + "|")
    for name, m in table.items():
        print(f"| {name} | {m['all']:+.3f} | " + " | ".join(f"{m[p]:+.3f}" for p in photos) + " |")
    print("| own: each photograph by the model adapted on it alone | - | " + " | ".join(f"{own[p]:+.3f}" for p in photos) + " |")
    print("| cross: each photograph by the model adapted on the other(s) | - | "
          + " | ".join(f"{cross[p]:+.3f}" for p in photos) + " |")
    out = {"checkpoint": a.checkpoint, "draws": a.draws, "steps": a.steps, "batch_size": a.batch_size, "lr": a.lr,
           "train_crops": a.train_crops, "test_crops": len(test), "seed": a.seed, "biharmonic_psnr": float(bih.mean()),
           "ddo_x0_psnr": {k: float(v.mean()) for k, v in rows.items()}, "margins": table, "own": own, "cross": cross,
           "prep_seconds": round(prep_s, 1), "adapt_seconds": timings, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
