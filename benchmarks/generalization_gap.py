"""Is a conditional model limited by what it learned or by how it transfers? Its posterior-mean
margin over biharmonic on crops of the *training* photographs (the very masks it trained on) beside
the same margin on the held-out test photographs, per source photograph.

    python benchmarks/generalization_gap.py runs/demo/checkpoint.pt [more checkpoints] [--every 10]

Training crops: every ``--every``-th crop of the train split (all seven photographs). ``ddo-x0`` is the
one-call estimate averaged over rotations and flips, as in ``ddo demo``. Prints a table and writes
JSON (``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections import defaultdict

import torch
from torch.utils.data import Subset

from ddo.plugins import load_host
from ddo.train import load_model
from ddo_conditional.evaluate import evaluate


class Every(Subset):
    """A subset that keeps the mask parameters of the masked dataset it selects from."""

    def __getattr__(self, name):
        if name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def margins(gen_sde, wrapper, host, split: str, every: int, batch_size: int) -> dict:
    base = host.datasets.get("natural-patches")(split=split, resolution=32)
    masked = wrapper.wrap_dataset(base, "test")  # the training masks, no augmentation
    keep = list(range(0, len(masked), every))
    result = evaluate(gen_sde, wrapper, Every(masked, keep), num_samples=1, steps=1, sampler=host.samplers.get("ddim"),
                      batch_size=batch_size, progress=False, baselines=("biharmonic",))
    m = result["metrics"]["methods"]
    model, bih = m["ddo-x0"]["psnr_query_per_image"], m["biharmonic"]["psnr_query_per_image"]
    by_photo = defaultdict(list)
    for i, a, b in zip(keep, model, bih):
        by_photo[base.sources[i]].append((a, b))
    photos = {name: {"crops": len(v), "biharmonic": sum(b for _, b in v) / len(v),
                     "margin": sum(a - b for a, b in v) / len(v)} for name, v in by_photo.items()}
    n = len(keep)
    return {"crops": n, "ddo_x0": sum(model) / n, "biharmonic": sum(bih) / n,
            "margin": sum(a - b for a, b in zip(model, bih)) / n, "won": sum(a > b for a, b in zip(model, bih)),
            "photos": photos}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--every", type=int, default=10, help="use every N-th training crop (default 10)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json")
    a = p.parse_args()
    host = load_host()
    rows = []
    for ckpt in a.checkpoints:
        gen_sde, wrapper, config = load_model(ckpt, host, "cpu")
        state = torch.load(ckpt, weights_only=True, map_location="cpu")
        row = {"run": os.path.basename(os.path.dirname(os.path.abspath(ckpt))), "train_steps": int(state["step"]),
               "augment": config.get("augment", "none"),
               "minutes": config.get("minutes"), "seed": config.get("seed"),
               "train": margins(gen_sde, wrapper, host, "train", a.every, a.batch_size),
               "test": margins(gen_sde, wrapper, host, "test", 1, a.batch_size)}
        rows.append(row)
        print(f"{row['run']}: {row['train_steps']} steps, augment {row['augment']}: margin on training crops "
              f"{row['train']['margin']:+.2f} dB ({row['train']['crops']} crops), on test crops "
              f"{row['test']['margin']:+.2f} dB ({row['test']['crops']})", file=sys.stderr)
    print(f"ddo-x0 minus biharmonic, query PSNR (dB); {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads\n")
    photos = list(rows[0]["train"]["photos"]) + list(rows[0]["test"]["photos"])
    print("| run | steps | train crops | test crops | " + " | ".join(photos) + " |")
    print("|---|---|---|---|" + "---|" * len(photos))
    for r in rows:
        per = {**r["train"]["photos"], **r["test"]["photos"]}
        print(f"| {r['run']} | {r['train_steps']} | "
              f"{r['train']['margin']:+.2f} | {r['test']['margin']:+.2f} | "
              + " | ".join(f"{per[name]['margin']:+.2f}" for name in photos) + " |")
    print("\n| photo | split | crops | biharmonic (dB) |\n|---|---|---|---|")
    for split in ("train", "test"):
        for name, v in rows[0][split]["photos"].items():
            print(f"| {name} | {split} | {v['crops']} | {v['biharmonic']:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"conditions": {"threads": torch.get_num_threads(), "every": a.every,
                                      "machine": platform.machine()}, "runs": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
