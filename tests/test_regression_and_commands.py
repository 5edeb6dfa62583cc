"""Unconditional DDO is unchanged by the plugin; the plugin's commands run end to end."""
import json

import pytest
import torch

from ddo.cli import main

from .conftest import assert_states_equal, tiny_train_args


def _run(tmp_path, name, image_folder, *extra):
    out = tmp_path / name
    assert main(tiny_train_args(out, image_folder, "--iterations", "4", "--ckpt-every", "3", *extra)) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    losses = [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return losses, ckpt, json.loads((out / "config.json").read_text())


def test_unconditional_training_is_bit_identical_with_plugin_absent_or_present(tmp_path, image_folder, monkeypatch):
    with_plugin = _run(tmp_path, "with", image_folder)
    monkeypatch.setenv("DDO_DISABLE_PLUGIN_AUTOLOAD", "1")
    without = _run(tmp_path, "without", image_folder)
    assert with_plugin[0] == without[0] and len(with_plugin[0]) == 4
    assert_states_equal(with_plugin[1], without[1])  # model, EMA, optimizer, step, RNG states
    assert with_plugin[2] == without[2]  # the same configuration: no plugin option applies to it


def test_conditional_training_then_reconstruct(tmp_path, image_folder, capsys):
    run = tmp_path / "cond"
    assert main(tiny_train_args(run, image_folder, "--iterations", "3", "--conditioning", "sparse-encoder",
                                "--loss", "query-dsm", "--mask-pattern", "grid", "--mask-seed", "7")) == 0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["mask_pattern"] == "grid" and ckpt["config"]["mask_seed"] == 7
    assert any(k.startswith("context_encoder.") for k in ckpt["model"])
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(run / "checkpoint.pt"), "--images", str(image_folder),
                 "--limit", "3", "--num-samples", "2", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_images"] == 3 and m["context_ratio"] == 0.1 and m["mask_pattern"] == "grid"
    assert set(m["methods"]) == {"ddo-mean", "ddo-sample", "ddo-samples-mean", "nearest", "linear", "cubic",
                                 "biharmonic"}  # an eps model has no one-call x0 row
    assert m["methods"]["ddo-mean"]["source"] == "ddo-samples-mean"
    for v in m["methods"].values():
        assert {"psnr_query", "ssim_query", "psnr_full"} <= set(v)
    assert 0 <= m["calibration"]["within_1std"] <= m["calibration"]["within_2std"] <= 1
    _assert_labelled_rows(out / "reconstructions.png", images=3, rows=7)  # context .. biharmonic
    assert "| biharmonic |" in capsys.readouterr().out


def _assert_labelled_rows(path, images: int, rows: int):
    """The figure holds ``rows`` rows of ``images`` tiles with a white margin on the left that has
    dark label pixels beside every row."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"))
    tile = (pixels.shape[0] - 2) // rows - 2
    margin = pixels.shape[1] - (images * (tile + 2) + 2)
    assert pixels.shape[0] == rows * (tile + 2) + 2 and margin > 10, (pixels.shape, tile, margin)
    for r in range(rows):
        band = pixels[2 + r * (tile + 2): (r + 1) * (tile + 2), :margin]
        assert (band < 100).any() and (band == 255).mean() > 0.5, r  # some text on a white margin


def test_reconstruct_refuses_unconditional_checkpoint_and_bad_ratios(tmp_path, image_folder, capsys):
    run = tmp_path / "u"
    assert main(tiny_train_args(run, image_folder, "--iterations", "1")) == 0
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(run / "checkpoint.pt"), "--images", str(image_folder),
                 "--out", str(out)]) == 2
    assert "is an unconditional model: reconstruct with --guidance dps" in capsys.readouterr().err
    assert main(tiny_train_args(tmp_path / "s", image_folder, "--iterations", "1", "--conditioning", "sparse-lift")) == 0
    assert main(["calibrate", "--checkpoint", str(run / "checkpoint.pt"), "--dataset", "image-folder",
                 "--data-root", str(image_folder)]) == 2
    assert "is an unconditional model" in capsys.readouterr().err
    assert main(tiny_train_args(tmp_path / "c", image_folder, "--iterations", "1", "--conditioning", "sparse-lift",
                                "--context-ratio", "0.7", "--query-ratio", "0.5")) == 2
    assert "context + query <= 1" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--minutes", "0.05", "--out", str(out), "--limit", "4", "--steps", "2",
                 "--num-samples", "2", "--calibrate-spread", "3", "--calibrate-shrinkage", "8", "--augment", "dihedral",
                 "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_images"] == 4 and m["dataset"] == "natural-patches/test"
    assert m["augment"] == "dihedral" and m["sampler"] == "ddim"
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in ("context_ratio", "query_ratio", "mask_seed", "mask_pattern", "augment")} == {
        "context_ratio": 0.1, "query_ratio": 0.1, "mask_seed": 42, "mask_pattern": "random", "augment": "dihedral"}
    rc = m["calibration_rescaled"]
    assert rc["fitted_images"] == 3 and rc["fitted_on"] == "natural-patches/val" and rc["spread_scale"] > 0
    assert rc["shrinkage"]["fitted_images"] == 8
    source = "ddo-x0" if "rejected" in rc["shrinkage"] else "ddo-x0-shrunk"  # a rule is kept only if it gains
    assert m["methods"]["ddo-mean"]["source"] == source and ("ddo-x0-shrunk" in m["methods"]) == (source != "ddo-x0")
    assert m["methods"]["ddo-mean"]["psnr_query"] == m["methods"][source]["psnr_query"]
    assert rc["spread_floor"] > 0 and 0 <= rc["within_1std"] <= rc["within_2std"] <= 1 and "within_t95" not in rc
    report = (out / "report.md").read_text()
    assert report.startswith("# ddo demo") and f"sqrt(({rc['spread_scale']:.2f} std)^2" in report
    from ddo.commands import bf16_pays  # the demo evaluates in bf16 where that was measured faster

    assert m["precision"] == ("bf16" if bf16_pays(torch.device("cpu")) else "fp32")
    assert f"network in {m['precision']}" in report
    assert "vs best classical baseline" in capsys.readouterr().out
    # reconstruct on an x0 model: the best measured sampler and steps, and the checkpoint's masks
    assert main(["reconstruct", "--checkpoint", str(out / "checkpoint.pt"), "--dataset", "natural-patches",
                 "--limit", "2", "--num-samples", "1", "--out", str(tmp_path / "rec"), "--no-progress"]) == 0
    rec = json.loads((tmp_path / "rec" / "metrics.json").read_text())
    assert (rec["sampler"], rec["steps"], rec["parameterization"]) == ("ddim", 20, "x0")
    assert rec["masks"] == {"context_ratio": 0.1, "query_ratio": 0.1, "mask_seed": 42, "mask_pattern": "random",
                            "from_flags": []}
    assert "all from the checkpoint" in capsys.readouterr().out
    assert rec["precision"] == "fp32"
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # the same reconstruction with the network in bf16
        assert main(["reconstruct", "--checkpoint", str(out / "checkpoint.pt"), "--dataset", "natural-patches",
                     "--limit", "2", "--num-samples", "1", "--out", str(tmp_path / "rec16"), "--no-progress",
                     "--bf16"]) == 0
        rec16 = json.loads((tmp_path / "rec16" / "metrics.json").read_text())
        assert rec16["precision"] == "bf16"
        for method in ("ddo-x0", "ddo-sample"):
            assert abs(rec16["methods"][method]["psnr_query"] - rec["methods"][method]["psnr_query"]) < 0.05


def test_demo_refuses_bf16_without_native_bf16_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    out = tmp_path / "demo"
    assert main(["demo", "--precision", "bf16", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--precision bf16: this CPU has no native bf16" in err and "--precision auto or fp32" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
