import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "ddo_schedule_reference.json"  # values of the reference implementation


# Property-based tests (tests/test_fuzz_*.py). "ci", the default: a fixed budget of examples per test,
# derandomized so that every run draws the same ones. "long": `python -m pytest --hypothesis-profile long
# tests/test_fuzz*.py`, 2,000 examples per test (DDO_FUZZ_EXAMPLES=N for another count) from fresh random
# draws (README: Command line).
_FUZZ_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
                HealthCheck.filter_too_much, HealthCheck.large_base_example]
settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True, database=None,
                          suppress_health_check=_FUZZ_HEALTH, print_blob=True)
settings.register_profile("long", max_examples=int(os.environ.get("DDO_FUZZ_EXAMPLES", "2000")), deadline=None, derandomize=False, database=None,
                          suppress_health_check=_FUZZ_HEALTH, print_blob=True)


def pytest_configure(config):
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("ci")


def fuzz_budget(ci_examples: int) -> settings:
    """A fuzz test's settings: ``ci_examples`` examples under the "ci" profile (sized so that the fuzz
    tests together stay well under a minute on 2 cores), the loaded profile's count under any other."""
    ci = settings.default.max_examples == settings.get_profile("ci").max_examples
    return settings(max_examples=ci_examples if ci else settings.default.max_examples)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    """Own cache dir, small thread count, no leaking of the autoload switch."""
    monkeypatch.setenv("DDO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ddo-cache"))
    monkeypatch.delenv("DDO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    torch.manual_seed(0)
    yield


def make_image_folder(folder: Path) -> Path:
    """Twelve smooth 20x20 RGB PNGs (real image files, made here) in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:20, 0:20] / 20.0
    for i in range(12):
        f = rng.uniform(0.5, 2.0, size=3)
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (f[c] * xx + (c + i) * 0.3 * yy)) for c in range(3)], -1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


@pytest.fixture
def image_folder(tmp_path):
    """Twelve smooth 20x20 RGB PNGs (real image files, made here)."""
    return make_image_folder(tmp_path / "images")


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Tiny checkpoints (one training step each, 16x16), built once per session for the tests that
    only read them: ``cond`` (sparse-biharmonic, x0), ``points`` (sparse-setconv, x0) and ``uncond``
    (eps), beside the image folder they were trained on (``images``)."""
    from ddo.cli import main

    root = tmp_path_factory.mktemp("tiny-runs")
    images = make_image_folder(root / "images")
    relative = ("--parameterization", "x0", "--loss", "x0-mse", "--loss-weighting", "relative", "--loss-floor", "1e-4")
    extra = {"cond": ("--conditioning", "sparse-biharmonic", *relative),
             "points": ("--conditioning", "sparse-setconv", *relative),
             "uncond": ()}
    runs = {"images": images}
    for name, flags in extra.items():
        assert main(tiny_train_args(root / name, images, "--iterations", "1", *flags)) == 0
        runs[name] = root / name / "checkpoint.pt"
    return runs


def tiny_train_args(out, data_root, *extra):
    return ["train", "--out", str(out), "--dataset", "image-folder", "--data-root", str(data_root),
            "--resolution", "16", "--ch", "8", "--ch-mult", "1,2", "--num-res-blocks", "1", "--modes", "4",
            "--batch-size", "4", "--lr", "2e-3", "--warmup", "1", "--log-every", "1", "--num-sample", "0",
            "--no-progress", *extra]


def state_tensors(state, prefix: str = "") -> dict:
    """Every tensor of a nested checkpoint state (dicts, lists), keyed by its path; other leaves as they are."""
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return {prefix: state}
    out = {}
    for k, v in items:
        out.update(state_tensors(v, f"{prefix}/{k}"))
    return out


def assert_states_equal(a, b, keys=("model", "ema", "optimizer", "step", "rng"), atol: float = 0.0) -> None:
    """The named parts of two checkpoints hold the same leaves: tensors equal (or within ``atol``)."""
    ta = state_tensors({k: a[k] for k in keys})
    tb = state_tensors({k: b[k] for k in keys})
    assert ta.keys() == tb.keys()
    assert any(k.startswith("/ema/") for k in ta) and any(k.startswith("/optimizer/state/") for k in ta)
    for k in ta:
        if torch.is_tensor(ta[k]):
            if atol:
                torch.testing.assert_close(ta[k].double(), tb[k].double(), atol=atol, rtol=0, msg=k)
            else:
                assert torch.equal(ta[k], tb[k]), k
        else:
            assert ta[k] == tb[k], k
