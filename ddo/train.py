"""Building a model from a configuration, and the training loop (a function; no argument parsing).

Reproducibility: the global batch of step ``k`` is a pure function of ``(seed, k)`` (a seeded
permutation per epoch; with several resolutions, the parts take turns: :mod:`ddo.batching`), flips
are a pure function of ``(seed, epoch, index)``, and the RNG that draws diffusion times and noise
is re-seeded from ``(seed, step, shard)`` at every step (a shard is one process's share of the
batch, or one gradient-accumulation part of it). Resuming from a checkpoint therefore continues
bit-exactly.

Several processes: launched by ``torchrun``, each rank trains on its slice of the global batch
under ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA); rank 0 writes logs and checkpoints.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import runlock, sampling
from .batching import EpochItems, StepBatches
from .checkpoint import atomic_write, load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from .config import LR_SCHEDULES, complete
from .data import RandomFlip
from .diffusion import BlurringDiffusion, DenoisingDiffusion, LinearDiffusion
from .errors import NumericalError, UserError
from .models import FNOUNet2d, SpectralConv2d, coordinate_grid
from .noise import make_noise
from .options import check_resume, check_stored_options, component_options, validate
from .progress import progress_bar
from .visual import save_grid

CHECKPOINT = "checkpoint.pt"
MODEL_CONFIG_KEYS = ("ch", "ch_mult", "num_res_blocks", "modes", "use_pos", "norm", "dropout", "use_pointwise_op",
                     "resolution")


def make_forward_diffusion(config: dict) -> BlurringDiffusion:
    """The forward process of a configuration (``LinearDiffusion`` when ``sigma_blur_max == 0``)."""
    noise = make_noise(config["gp_type"], config["gp_exponent"], config["gp_length_scale"], config["gp_sigma"])
    if config["sigma_blur_max"] == 0:
        return LinearDiffusion(ch=config["channels"], ns_method=config["ns_method"], noise=noise)
    return BlurringDiffusion(ch=config["channels"], ns_method=config["ns_method"], disp_method=config["disp_method"],
                             sigma_blur_min=config["sigma_blur_min"], sigma_blur_max=config["sigma_blur_max"],
                             noise=noise)


def build_model(config: dict, host):
    """``(gen_sde, wrapper)`` for a configuration: noise field, forward diffusion, wrapped network,
    and the parameterisation that says what the network predicts."""
    try:
        fd = make_forward_diffusion(config)
        wrapper = host.model_wrappers.get(config["conditioning"])(config)
        base_cfg = {k: config[k] for k in MODEL_CONFIG_KEYS}
        base_cfg["in_channels"] = config["channels"]
        model_factory = host.models.get(config["model"])
        network = wrapper.build_model(lambda **over: model_factory(**{**base_cfg, **over}))
        gen_sde = DenoisingDiffusion(fd, network, parameterization=config.get("parameterization", "eps"),
                                     timestep_sampler=config["timestep_sampler"],
                                     weight_method=config["weight_method"], x0_clip=config.get("x0_clip", "auto"))
    except (ValueError, KeyError) as e:
        raise UserError(str(e).strip("'\"")) from None
    return gen_sde, wrapper


def load_model(checkpoint_path, host, device="cpu", use_ema: bool = True, x0_clip: str | None = None):
    """Rebuild ``(gen_sde, wrapper, config)`` from a checkpoint (the EMA weights by default).

    ``x0_clip``: how the sampler steps bound the ``x0`` estimate, instead of the checkpoint's own
    (``None``: the checkpoint's; a checkpoint written before the option existed gets ``"auto"``, the
    measured best for its parameterisation). The returned ``config`` holds the value in effect."""
    state = load_checkpoint(checkpoint_path)
    config = complete({**state["config"], **({} if x0_clip is None else {"x0_clip": x0_clip})})
    check_stored_options(state["config"], host, checkpoint_path)
    gen_sde, wrapper = build_model(config, host)
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    try:
        gen_sde.network.load_state_dict(weights)
    except RuntimeError as e:
        raise UserError(f"{checkpoint_path} does not match its own configuration: {str(e).splitlines()[0]}") from None
    gen_sde.network.to(device).eval()
    return gen_sde, wrapper, config


class _Dist:
    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def close(self):
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)


def _lr(config: dict, step: int, progress: float = 0.0) -> float:
    """Learning rate at ``step``: linear warm-up over ``warmup`` steps, then constant, or with
    ``lr_schedule="cosine"`` multiplied by ``(1 + cos(pi p)) / 2``, ``p`` in ``[0, 1]`` the share of
    the run done (:func:`_progress`)."""
    lr = config["lr"] * min(1.0, (step + 1) / max(1, config["warmup"]))
    if config.get("lr_schedule", "constant") == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return lr


def _progress(step: int, max_steps: float, started: float, deadline: float, now: float) -> float:
    """Share of the run done: ``step / iterations`` or the elapsed share of ``--minutes`` in this
    invocation, whichever is further (the run stops at the first of the two limits). With
    ``--minutes`` and ``--resume``, the schedule starts again from the resumed step's learning rate
    (a warm restart): the budget is per invocation."""
    p = 0.0
    if max_steps != math.inf:
        p = step / max_steps
    if deadline != math.inf:
        p = max(p, (now - started) / max(deadline - started, 1e-9))
    return p


def train(config: dict, host, out_dir, resume: bool = False, device: str | torch.device = "cpu",
          progress: bool = True) -> dict:
    """Train until ``config["iterations"]`` steps or ``config["minutes"]`` minutes, whichever first.

    ``config`` is a resolved configuration (:func:`ddo.config.resolve`). Every combination that
    cannot work is refused here, before anything is written: components whose declared requirements
    do not hold, and on ``resume`` a change to an architecture or data option.

    Writes ``config.json``, ``checkpoint.pt`` (every ``ckpt_every`` steps and at the end),
    ``metrics.jsonl`` and, for unconditional models, ``samples.png``. Returns a summary dict.
    """
    out_dir = Path(out_dir)
    device = torch.device(device)
    state = _check_start(config, host, out_dir, resume)
    dist = _Dist(device)
    lock = runlock.acquire(out_dir) if dist.main else None  # one writer per run directory (ddo.runlock)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    try:
        return _train(config, host, out_dir, state, device, dist, progress)
    finally:
        dist.close()
        if lock is not None:
            lock.release()


def _check_start(config: dict, host, out_dir: Path, resume: bool) -> dict | None:
    """Refuse a run that cannot work; the checkpoint state to resume from, or ``None``."""
    if config.get("iterations") is None and config.get("minutes") is None:
        raise UserError("give --iterations N or --minutes M (or both)")
    if config.get("lr_schedule", "constant") not in LR_SCHEDULES:
        raise UserError(f"unknown --lr-schedule {config['lr_schedule']!r}; known: {', '.join(LR_SCHEDULES)}")
    if config.get("sample_every") and not config.get("num_sample"):
        raise UserError(f"--sample-every {config['sample_every']} draws preview samples and --num-sample is 0; "
                        "give --num-sample N or drop --sample-every")
    validate(config, host)
    complete(config)  # refuses what resolve() refuses, for a configuration built by hand (--resolutions)
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise UserError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    if not resume:
        return None
    if not ckpt_path.exists():
        raise UserError(f"--resume given but {ckpt_path} does not exist")
    state = load_checkpoint(ckpt_path)
    check_resume(state["config"], config, host, str(out_dir))
    return state


@dataclass
class _Run:
    """What a training run holds: the denoiser, its wrapper, the weights, the data, the step."""

    gen_sde: DenoisingDiffusion
    wrapper: object
    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: object
    parts: list  # (dataset, flipped) per training resolution: ddo.batching.EpochItems
    step: int = 0


def _setup(config: dict, host, state: dict | None, device, dist) -> _Run:
    """Build the model, EMA, optimizer, loss and data of a run; restore them from ``state``.

    Every global generator (torch, numpy, python) is seeded from ``--seed`` first, so the RNG states
    a checkpoint saves are a function of the command, and two identical runs write identical checkpoints."""
    seed_everything(config["seed"])
    if config["batch_size"] % dist.world:
        raise UserError(f"--batch-size {config['batch_size']} is not divisible by the {dist.world} processes")
    gen_sde, wrapper = build_model(config, host)
    model = gen_sde.network.to(device)
    if config.get("bf16"):
        set_autocast(model, torch.bfloat16)
    # the data first: a wrapper may set state of its network from the training data (a prior's buffers)
    # before the EMA copy is taken
    parts = [_part(config, host, wrapper, res) for res in training_resolutions(config)]
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = make_optimizer(model.parameters(), config["lr"], device)
    run = _Run(gen_sde, wrapper, model, ema, optimizer, host.losses.get(config["loss"])(**component_options(config, "loss")), parts)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        run.step = int(state["step"])
    if dist.enabled:
        gen_sde.network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.get("compile"):
        gen_sde.network = torch.compile(gen_sde.network)
    return run


def training_resolutions(config: dict) -> list[int]:
    """The resolutions a run trains at: ``--resolutions`` when given, else ``--resolution``."""
    return list(config.get("resolutions") or [config["resolution"]])


def _part(config: dict, host, wrapper, res: int) -> tuple:
    """The training data at resolution ``res``: the wrapped dataset and its :class:`RandomFlip`."""
    try:
        base = host.datasets.get(config["dataset"])(split="train", data_root=config["data_root"], resolution=res,
                                                   crop_scales=config.get("crop_scales", "fixed"), seed=config["seed"])
    except UserError as e:
        if not config.get("resolutions"):
            raise
        raise UserError(f"--resolutions {','.join(map(str, config['resolutions']))}, at {res}: {e}") from None
    if len(base) and base[0]["image"].shape[0] != config["channels"]:
        raise UserError(f"the dataset {config['dataset']} has {base[0]['image'].shape[0]}-channel images and the run "
                        f"has --channels {config['channels']}; pass --channels {base[0]['image'].shape[0]}")
    flipped = RandomFlip(base, config["seed"])
    dataset = wrapper.wrap_dataset(flipped, "train")
    if len(dataset) < config["batch_size"]:
        at = f" at {res}x{res}" if config.get("resolutions") else ""
        raise UserError(f"the dataset has {len(dataset)} images{at}, fewer than one batch of {config['batch_size']}; "
                        "lower --batch-size")
    return dataset, flipped


def _start_outputs(config: dict, out_dir: Path, step: int) -> None:
    """Rank 0: the run folder, ``config.json``, and the log cut back to the resumed step."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f".{CHECKPOINT}.tmp*"):  # left by a process killed while writing
        stale.unlink()
    atomic_write(out_dir / "config.json", lambda f: f.write(json.dumps(config, indent=2).encode()))
    _truncate_log(out_dir / "metrics.jsonl", step)


def _save(run: _Run, config: dict, out_dir: Path, dist) -> None:
    """The checkpoint: exactly the state that ``--resume`` restores."""
    if dist.main:
        save_checkpoint(out_dir / CHECKPOINT, {
            "model": run.model.state_dict(), "ema": run.ema.state_dict(), "optimizer": run.optimizer.state_dict(),
            "step": run.step, "config": config, "rng": rng_state(),
        })
    dist.barrier()


def _batches(run: _Run, config: dict, dist, device):
    """The remaining batches of the run from one DataLoader (workers kept alive across epochs, pinned
    memory and asynchronous copies on CUDA), moved to ``device``."""
    workers, cuda = config["num_workers"], device.type == "cuda"
    sampler = StepBatches([len(d) for d, _ in run.parts], config["batch_size"], config["seed"], run.step, dist.rank,
                          dist.world)
    loader = DataLoader(EpochItems(run.parts), batch_sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=cuda)
    for batch in loader:
        yield {k: (v.to(device, non_blocking=cuda) if torch.is_tensor(v) else v) for k, v in batch.items()}


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for every parameter (buffers are not averaged)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def _optimise(run: _Run, batch: dict, config: dict, dist, device, lr: float, out_dir: Path) -> float:
    """One optimisation step on ``batch``; returns the global batch's mean loss."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    loss = _accumulate(run.gen_sde, run.loss_fn, run.wrapper, batch, config, run.step, dist, device)
    if not torch.isfinite(loss):
        raise NumericalError(f"the loss became non-finite at step {run.step} (the training diverged); the last good "
                             f"checkpoint, if any, is kept in {out_dir}; lower --lr or check the data")
    if config["grad_clip"]:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config["grad_clip"])
    run.optimizer.step()
    update_ema(run.ema, run.model, config["ema_decay"])
    run.step += 1
    return loss.item()


class _Log:
    """``metrics.jsonl`` lines (mean loss since the last line, learning rate, images/s) on rank 0."""

    def __init__(self, path: Path, step: int, batch_size: int, every: int, enabled: bool):
        self.file = open(path, "a") if enabled else None
        self.recent, self.t_last, self.n_last = [], time.monotonic(), step
        self.batch_size, self.every = batch_size, every

    def add(self, step: int, loss: float, lr: float, bar) -> None:
        self.recent.append(loss)
        if self.file is None or step % self.every:
            return
        now = time.monotonic()
        ips = (step - self.n_last) * self.batch_size / max(now - self.t_last, 1e-9)
        self.t_last, self.n_last = now, step
        record = {"step": step, "loss": sum(self.recent) / len(self.recent), "lr": lr, "img_per_s": ips}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        bar.set_postfix(loss=f"{record['loss']:.4g}", img_s=f"{ips:.1f}", refresh=False)
        self.recent = []

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _train(config, host, out_dir, state, device, dist, progress):
    run = _setup(config, host, state, device, dist)
    if dist.main:
        _start_outputs(config, out_dir, run.step)
    max_steps = config["iterations"] if config["iterations"] is not None else math.inf
    started = time.monotonic()
    deadline = started + 60 * config["minutes"] if config["minutes"] is not None else math.inf
    bar = progress_bar(total=None if max_steps == math.inf else max_steps, initial=run.step, desc="train",
                       enabled=progress and dist.main)
    log = _Log(out_dir / "metrics.jsonl", run.step, config["batch_size"], config["log_every"], dist.main)
    last_loss = float("nan")
    try:
        batches = _batches(run, config, dist, device)
        while run.step < max_steps and time.monotonic() < deadline:
            lr = _lr(config, run.step, _progress(run.step, max_steps, started, deadline, time.monotonic()))
            last_loss = _optimise(run, next(batches), config, dist, device, lr, out_dir)
            log.add(run.step, last_loss, lr, bar)
            bar.update(1)
            if run.step % config["ckpt_every"] == 0:
                _save(run, config, out_dir, dist)
            if config["sample_every"] and run.step % config["sample_every"] == 0 and dist.main:
                _preview(run, config, out_dir / f"samples_{run.step:07d}.png", device, host)
    finally:
        bar.close()
        log.close()
    _save(run, config, out_dir, dist)
    if dist.main and config["num_sample"]:
        _preview(run, config, out_dir / "samples.png", device, host)
    return {"step": run.step, "last_loss": last_loss, "out_dir": str(out_dir)}


def make_optimizer(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam, with the fused kernel on CPU and CUDA (one pass over parameters, gradients and moments
    instead of a loop over tensors). Same update rule and state keys, so checkpoints move between
    the two; rounding differs in the last bits."""
    return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))


def set_autocast(network: torch.nn.Module, dtype: torch.dtype | None) -> int:
    """Run the trunk of every FNO-UNet inside ``network`` under autocast to ``dtype`` (``None``: off).

    Only the trunk: the forward diffusion, the DCTs, the parameterisation conversions and any wrapper
    layers stay fp32, as do the trunk's spectral transforms and mode mixing. Returns the number of
    networks changed.
    """
    nets = [m for m in network.modules() if isinstance(m, FNOUNet2d)]
    for m in nets:
        m.autocast_dtype = dtype
    return len(nets)


def set_inference_dtype(network: torch.nn.Module, dtype: torch.dtype | None) -> int:
    """Inference in ``dtype`` (``torch.bfloat16``) or fp32 (``None``): every FNO-UNet trunk computes in
    ``dtype`` (:meth:`FNOUNet2d.set_inference_dtype`: its parameters cast once, fp32 values kept), its
    spectral transforms and mode mixing included; the lifting layer, the diffusion's per-mode
    arithmetic and the wrappers' layers stay fp32. Returns the number of networks changed."""
    for m in network.modules():
        if isinstance(m, SpectralConv2d):
            m.mix_dtype = dtype
    nets = [m for m in network.modules() if isinstance(m, FNOUNet2d)]
    for m in nets:
        m.set_inference_dtype(dtype)
    return len(nets)


def _accumulate(gen_sde, loss_fn, wrapper, batch, config, step, dist, device) -> torch.Tensor:
    """Forward and backward over ``grad_accum`` shards of this rank's batch; returns the mean loss
    over the global batch (identical on every rank).

    Shard ``j`` of rank ``r`` draws its times and noise from a generator seeded by
    ``(seed, step, r * grad_accum + j)``, so ``K`` processes and one process with ``K`` accumulation
    shards compute the same gradient.
    """
    accum = config["grad_accum"]
    n = batch["image"].shape[0]
    if n % accum:
        raise UserError(f"the per-process batch {n} is not divisible by --grad-accum {accum}")
    size, total = n // accum, torch.zeros((), device=device)
    for j in range(accum):
        torch.manual_seed(_step_seed(config["seed"], step, dist.rank * accum + j))
        shard = {k: (v[j * size:(j + 1) * size] if torch.is_tensor(v) else v) for k, v in batch.items()}
        x = shard["image"]
        v = coordinate_grid(x.shape[0], x.shape[-2], x.shape[-1], device, x.dtype)
        sync = j == accum - 1 or not dist.enabled
        ctx = contextlib.nullcontext() if sync else gen_sde.network.no_sync()
        with ctx:
            loss = loss_fn(gen_sde, shard, v, wrapper.model_kwargs(shard, device))["loss"].mean() / accum
            loss.backward()
        total = total + loss.detach()
    if dist.enabled:
        torch.distributed.all_reduce(total)
        total = total / dist.world
    return total


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a run resumes from (they will be redone)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    atomic_write(path, lambda f: f.write("".join(ln + "\n" for ln in lines).encode()))


def _preview(run: _Run, config: dict, path: Path, device, host) -> None:
    """Unconditional sample grid from the EMA weights (skipped when the model needs extra inputs)."""
    if run.wrapper.needs_inputs:
        return
    preview = DenoisingDiffusion(run.gen_sde.forward_diffusion, run.ema, run.gen_sde.parameterization,
                                 x0_clip=run.gen_sde.x0_clip)
    g = torch.Generator(device=device).manual_seed(config["seed"])
    shape = (config["num_sample"], config["channels"], config["resolution"], config["resolution"])
    x = sampling.sample(preview, shape, num_steps=config["sample_steps"], sampler=host.samplers.get(config["sampler"]),
                        generator=g, progress=False, device=device)
    save_grid(x.clamp(-1, 1), path, nrow=int(math.sqrt(config["num_sample"])) or 1)
