"""Images per second of the whole conditional data path, as `ddo train` runs it: a CIFAR-10-shaped
folder on disk (`cifar-10-batches-py` format, 60,000 random 32x32 images) -> `cifar10` dataset ->
fixed masks -> one DataLoader for the run -> batch on the device -> the conditioning's inputs
(`wrapper.model_kwargs`: context image and mask, and for `sparse-biharmonic` the batched biharmonic
inpainting). No network runs: this is what the data path can feed a model.

    python benchmarks/data_path.py --json benchmarks/results/data_path_cpu.json [--device cuda] [--workers 2]

The first epoch (which includes reading the batch files) and the later ones are reported apart.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddo.config import resolve
from ddo.data import RandomFlip, write_cifar_like
from ddo.plugins import load_host
from ddo.batching import EpochItems, StepBatches


def write_cifar_folder(root: Path, n_train: int = 50_000, n_test: int = 10_000, seed: int = 0) -> Path:
    """Random uint8 images in the `cifar-10-batches-py` layout (five train batches, one test batch)."""
    return write_cifar_like(root, n_train, n_test, seed)


def measure(host, key: str, root: Path, device, batch: int, epochs: int, workers: int) -> dict:
    config = resolve({"dataset": "cifar10", "data_root": str(root), "conditioning": key, "batch_size": batch}, None, host)
    wrapper = host.model_wrappers.get(key)(config)
    t0 = time.perf_counter()
    base = host.datasets.get("cifar10")(split="train", data_root=str(root), resolution=32)
    load_s = time.perf_counter() - t0
    flipped = RandomFlip(base, 0)
    dataset = wrapper.wrap_dataset(flipped, "train")
    steps = len(dataset) // batch
    loader = torch.utils.data.DataLoader(EpochItems([(dataset, flipped)]), batch_sampler=StepBatches(len(dataset), batch, 0, 0),
                                         num_workers=workers, persistent_workers=workers > 0,
                                         pin_memory=device.type == "cuda")
    it, per_epoch = iter(loader), []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for _ in range(steps):
            b = next(it)
            b = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in b.items()}
            kw = wrapper.model_kwargs(b, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_epoch.append(time.perf_counter() - t0)
    assert kw["context_image"].shape == (batch, 3, 32, 32)
    images = steps * batch
    return {"first_epoch_img_per_s": round((images) / (per_epoch[0] + load_s), 1),
            "img_per_s": round(images / float(np.median(per_epoch[1:])), 1) if epochs > 1 else None,
            "epoch_seconds": [round(s, 2) for s in per_epoch], "dataset_load_s": round(load_s, 2),
            "images_per_epoch": images}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", default="sparse-encoder,sparse-biharmonic")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default="benchmarks/results/data_path.json")
    a = p.parse_args()
    device = torch.device(a.device)
    host = load_host()
    out = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "device": a.device,
           "batch_size": a.batch_size, "workers": a.workers, "images": "60,000 random uint8 32x32 (train split 50,000)"}
    with tempfile.TemporaryDirectory() as d:
        write_cifar_folder(Path(d))
        for key in a.keys.split(","):
            out[key] = measure(host, key, Path(d), device, a.batch_size, a.epochs, a.workers)
            print(key, json.dumps(out[key]), flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.json}")
