from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "ddo_schedule_reference.json"  # values of the reference implementation


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    """Own cache dir, small thread count, no leaking of the autoload switch."""
    monkeypatch.setenv("DDO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ddo-cache"))
    monkeypatch.delenv("DDO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    torch.manual_seed(0)
    yield


@pytest.fixture
def image_folder(tmp_path):
    """Twelve smooth 20x20 RGB PNGs (real image files, made here)."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:20, 0:20] / 20.0
    for i in range(12):
        f = rng.uniform(0.5, 2.0, size=3)
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (f[c] * xx + (c + i) * 0.3 * yy)) for c in range(3)], -1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


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
