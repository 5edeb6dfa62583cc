"""Property-based tests of every entry point: generated argument vectors end with exit code 0, or with
exit code 2, one line on stderr naming the problem and no file created or changed (or exit code 1,
one line, for a computation that diverged); never a traceback (rule: tests/fuzzing.py).

Vectors start from a valid, cheap invocation on the session's tiny checkpoints and change up to three
things. Valid changes are cheap by construction (one training step, one sampling step, one or two
images, 8x8 or 16x16); huge values are drawn only for the flags a memory guard must refuse
(``DDO_MEMORY_LIMIT`` is set to :data:`~tests.fuzzing.MEMORY_LIMIT`), never for step or iteration
counts, which only cost time. ``--compile`` is left out (it runs torch.compile for minutes).
Budgets: tests/conftest.py (``--hypothesis-profile long`` for long runs).
"""
import pytest
from hypothesis import given

from .conftest import fuzz_budget, tiny_train_args
from .fuzzing import MEMORY_LIMIT, Sandbox, Spec, argv, one_thread, run_in

PAIRS = lambda tokens: [[t, None] if i + 1 == len(tokens) or tokens[i + 1].startswith("--") else [t, tokens[i + 1]]
                        for i, t in enumerate(tokens) if t.startswith("--")]

INT_FLAGS_SMALL = {"--seed": ("0", "3"), "--steps": ("1", "2")}
SAMPLERS = ("denoise", "ddim", "ddim-x0", "euler-maruyama")
X0_CLIPS = ("auto", "none", "clip", "dynamic", "floor", "floor-clip")
MASKS = {"--mask-seed": ("0", "7"), "--mask-pattern": ("random", "grid", "block", "lines"),
         "--context-ratio": ("0.1", "0.3", "0.05:0.2"), "--query-ratio": ("0.1", "0.2")}

TRAIN = Spec("train", PAIRS(tiny_train_args("@new", "@images", "--iterations", "1", "--sample-steps", "1")[1:]), {
    "--out": ("@new", "@rel", "@run", "@new/a/b"), "--iterations": ("1", "2"), "--minutes": ("0.001",),
    "--resume": None, "--device": ("cpu",), "--no-progress": None, "--dataset": ("image-folder",),
    "--data-root": ("@images",), "--download": None, "--resolution": ("16", "8"), "--resolutions": ("8,16", "16"),
    "--channels": ("3",),
    "--num-workers": ("0",), "--crop-scales": ("fixed", "continuous"), "--model": ("fno-unet",), "--ch": ("4", "8"),
    "--ch-mult": ("1", "1,2"), "--num-res-blocks": ("1",), "--modes": ("2", "4"), "--use-pos": ("true", "false"),
    "--use-pointwise-op": ("true", "false"), "--norm": ("none", "group"), "--dropout": ("0", "0.1"),
    "--ns-method": ("vp_cosine",), "--disp-method": ("linear", "sine", "log"), "--sigma-blur-min": ("0.05", "0"),
    "--sigma-blur-max": ("0", "0.25"), "--gp-type": ("independent", "exponential"), "--gp-exponent": ("1", "2"),
    "--gp-length-scale": ("0.1",), "--gp-sigma": ("1",), "--timestep-sampler": ("uniform", "low_discrepancy"),
    "--weight-method": ("none", "min-snr"), "--parameterization": ("eps", "x0", "v"), "--x0-clip": X0_CLIPS,
    "--loss": ("dsm", "query-dsm", "x0-mse", "x0-mse-mixed", "x0-mse-relative", "x0-mse-scored-l2"),
    "--loss-weighting": ("none", "relative", "ratio", "scored-l2"), "--loss-t1-fraction": ("0", "0.5", "1", "2"),
    "--loss-floor": ("1e-4", "0"),
    "--conditioning": ("none", "sparse-encoder", "sparse-concat", "sparse-lift", "sparse-interp", "sparse-biharmonic",
                       "sparse-setconv", "sparse-attention", "sparse-route"), "--observe": ("tasks", "forward"),
    "--batch-size": ("2", "4"), "--grad-accum": ("1", "2"), "--bf16": None, "--lr": ("1e-3",), "--grad-clip": ("1", "0"),
    "--ema-decay": ("0.9",), "--warmup": ("0", "1"), "--lr-schedule": ("constant", "cosine"), "--seed": ("0", "3"),
    "--ckpt-every": ("1",), "--log-every": ("1",), "--sample-every": ("1",), "--num-sample": ("0", "1"),
    "--sample-steps": ("1", "2"), "--sampler": SAMPLERS, "--preset": ("cpu-small",), "--augment": ("none", "dihedral"),
    "--refiner-width": ("0", "4"), "--residual-scale": ("none", "context", "context-input"),
    "--context-feature-dim": ("4",), "--context-coords": ("grid", "jitter"), "--point-feature-dim": ("4",),
    "--attention-heads": ("1", "2"), **MASKS},
    huge=("--resolution", "--resolutions", "--batch-size", "--ch", "--modes", "--num-sample", "--context-feature-dim",
          "--point-feature-dim", "--refiner-width", "--seed", "--mask-seed", "--warmup", "--ckpt-every", "--log-every"),
    fixed=("--iterations",))

SAMPLE = Spec("sample", [["--checkpoint", "@uncond"], ["--num", "2"], ["--steps", "1"], ["--out", "@png"],
                         ["--no-progress", None]], {
    "--checkpoint": ("@uncond",), "--num": ("1", "2", "3"), "--resolution": ("16", "8"), "--sampler": SAMPLERS,
    "--x0-clip": X0_CLIPS, "--bf16": None, "--device": ("cpu",), "--out": ("@png", "@new/a/b.png", "rel.PNG"),
    "--no-progress": None, **INT_FLAGS_SMALL}, huge=("--num", "--resolution", "--seed"))

RECONSTRUCT_COMMON = {
    "--resolution": ("16", "8"), "--limit": ("1", "2"), "--num-samples": ("1", "2"), "--sampler": SAMPLERS,
    "--data-consistency": None, "--no-symmetrize-x0": None, "--raw-spread": None, "--batch-size": ("1", "2", "32"),
    "--bf16": None, "--device": ("cpu",), "--no-progress": None, "--out": ("@new", "@rel", "@dir", "@new/a/b"),
    "--baselines": ("nearest", "biharmonic,thin-plate"), "--task": ("forward", "joint"), "--points-per-channel": ("10",),
    **INT_FLAGS_SMALL}
RECONSTRUCT = Spec("reconstruct", [["--checkpoint", "@cond"], ["--images", "@images"], ["--limit", "1"],
                                   ["--num-samples", "2"], ["--steps", "1"], ["--out", "@new"], ["--no-progress", None]],
                   {"--checkpoint": ("@cond",), "--images": ("@images",), "--split": ("test",), **MASKS,
                    **RECONSTRUCT_COMMON},
                   huge=("--resolution", "--limit", "--num-samples", "--batch-size", "--seed", "--mask-seed",
                         "--points-per-channel"))
POINTS = Spec("points", [["--checkpoint", "@points"], ["--points", "@csv"], ["--num-samples", "2"], ["--steps", "1"],
                         ["--out", "@new"], ["--no-progress", None]],
              {"--checkpoint": ("@points",), "--points": ("@csv",), "--extent": ("1,1",), **{
                  k: v for k, v in RECONSTRUCT_COMMON.items() if k not in ("--limit", "--data-consistency", "--raw-spread",
                                                                          "--baselines", "--task", "--points-per-channel")}},
              huge=("--resolution", "--num-samples", "--batch-size", "--seed"))
CALIBRATE = Spec("calibrate", [["--checkpoint", "@cond"], ["--limit", "2"], ["--num-samples", "2"], ["--steps", "1"],
                               ["--no-progress", None]], {
    "--checkpoint": ("@cond",), "--dataset": ("image-folder",), "--data-root": ("@images",), "--split": ("train",),
    "--limit": ("1", "2"), "--shrinkage-limit": ("1",), "--num-samples": ("2", "3"), "--sampler": SAMPLERS,
    "--batch-size": ("1", "2"), "--bf16": None, "--device": ("cpu",), "--no-progress": None, **INT_FLAGS_SMALL},
    huge=("--limit", "--shrinkage-limit", "--num-samples", "--batch-size", "--seed"))
DEMO = Spec("demo", [["--minutes", "0.001"], ["--limit", "1"], ["--num-samples", "2"], ["--steps", "1"],
                     ["--calibrate-spread", "2"], ["--calibrate-shrinkage", "1"], ["--precision", "fp32"],
                     ["--out", "@new"], ["--no-progress", None]], {
    "--minutes": ("0.001",), "--out": ("@new", "@rel"), "--dataset": ("natural-patches",),
    "--conditioning": ("sparse-biharmonic", "sparse-interp", "sparse-encoder"), "--parameterization": ("x0", "eps", "v"),
    "--refiner-width": ("0", "4"), "--residual-scale": ("none", "context", "context-input"),
    "--lr-schedule": ("constant", "cosine"), "--augment": ("none", "photometric"), "--loss": ("x0-mse", "dsm"),
    "--num-samples": ("1", "2"), "--sampler": SAMPLERS, "--limit": ("1",), "--calibrate-spread": ("2",),
    "--calibrate-shrinkage": ("1",), "--precision": ("fp32", "auto"), "--device": ("cpu",), "--no-progress": None,
    **INT_FLAGS_SMALL}, huge=("--num-samples", "--seed"), hostile=True,
    fixed=("--minutes", "--limit", "--steps", "--calibrate-spread", "--calibrate-shrinkage"))


@pytest.fixture
def fuzz_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DDO_MEMORY_LIMIT", MEMORY_LIMIT)
    with one_thread():
        yield tmp_path


def _run(spec_tokens, fuzz_env, tiny_runs, capsys, copy_checkpoints=False):
    box = Sandbox(fuzz_env, tiny_runs, copy_checkpoints)
    try:
        run_in(box, spec_tokens, capsys)
    finally:
        box.close()


@fuzz_budget(30)
@given(tokens=argv(TRAIN))
def test_train_argv(tokens, fuzz_env, tiny_runs, capsys):
    _run(tokens, fuzz_env, tiny_runs, capsys)


@fuzz_budget(25)
@given(tokens=argv(SAMPLE))
def test_sample_argv(tokens, fuzz_env, tiny_runs, capsys):
    _run(tokens, fuzz_env, tiny_runs, capsys)


@fuzz_budget(25)
@given(tokens=argv(RECONSTRUCT))
def test_reconstruct_argv(tokens, fuzz_env, tiny_runs, capsys):
    _run(tokens, fuzz_env, tiny_runs, capsys)


@fuzz_budget(15)
@given(tokens=argv(POINTS))
def test_reconstruct_points_argv(tokens, fuzz_env, tiny_runs, capsys):
    _run(tokens, fuzz_env, tiny_runs, capsys)


@fuzz_budget(15)
@given(tokens=argv(CALIBRATE))
def test_calibrate_argv(tokens, fuzz_env, tiny_runs, capsys):
    _run(tokens, fuzz_env, tiny_runs, capsys, copy_checkpoints=True)


@fuzz_budget(8)
@given(tokens=argv(DEMO))
def test_demo_argv(tokens, fuzz_env, tiny_runs, capsys):
    _run(tokens, fuzz_env, tiny_runs, capsys)
