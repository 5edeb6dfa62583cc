"""Wrong combinations are refused at start (one line, exit 2, nothing written); a run's record holds
every option in effect; resume keeps the architecture and the masks."""
import json

import pytest
import torch

from ddo import hookimpl
from ddo.cli import main
from ddo.options import Option

from .conftest import tiny_train_args


class _PlainNet(torch.nn.Module):
    """A network without a lifting layer (not a ddo.models.LiftedNetwork)."""

    def __init__(self, in_channels=3, **_):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, in_channels, 1)

    def forward(self, x, temp, v=None, **kwargs):
        return self.conv(x)


class _PlainModelPlugin:
    @hookimpl
    def register_models(self, register):
        register("plain", _PlainNet)


REFUSED = [
    (["--conditioning", "sparse-interp", "--parameterization", "eps", "--loss", "x0-mse"],
     "loss x0-mse needs --parameterization x0 or v; this run has --parameterization eps"),
    (["--conditioning", "sparse-biharmonic", "--loss", "x0-mse", "--loss-weighting", "relative", "--parameterization",
      "x0", "--mask-seed", "1"], None),  # a valid combination, for contrast
    (["--conditioning", "sparse-interp", "--parameterization", "x0", "--loss-weighting", "relative"],
     "--loss-weighting relative weighs by the error of the estimate the network refines; --conditioning sparse-interp "
     "refines none (use sparse-biharmonic, sparse-kriging, sparse-route, sparse-setconv, sparse-attention, or "
     "--loss-weighting none)"),
    (["--conditioning", "sparse-encoder", "--loss-floor", "0.001"],
     "--loss-floor 0.001 needs --loss x0-mse, x0-mse-mixed, x0-mse-relative, x0-mse-ratio or x0-mse-scored-l2; this run "
     "has --loss dsm"),
    (["--conditioning", "sparse-biharmonic", "--loss-t1-fraction", "1.5"], "expected a fraction from 0 to 1, got '1.5'"),
    (["--conditioning", "sparse-interp", "--parameterization", "eps", "--residual-scale", "context"],
     "--residual-scale context needs --parameterization x0 or v; this run has --parameterization eps"),
    (["--conditioning", "sparse-encoder", "--refiner-width", "4"],
     "--refiner-width applies to --conditioning sparse-interp, sparse-biharmonic, sparse-kriging or sparse-route; this run "
     "has --conditioning sparse-encoder"),
    (["--mask-seed", "3"], "--mask-seed applies to --conditioning sparse-encoder"),
    (["--loss", "query-dsm"], "loss query-dsm needs --conditioning sparse-encoder, sparse-concat"),
    (["--conditioning", "sparse-lift", "--model", "plain"], "sparse-lift adds its inputs at the lifting layer; the "
     "network _PlainNet has none"),
    (["--conditioning", "sparse-biharmonic", "--model", "plain"], "sparse-interp adds its inputs at the lifting layer"),
    (["--conditioning", "sparse-wavelet"], "unknown conditioning 'sparse-wavelet'; known: none, sparse-attention, sparse-biharmonic"),
    (["--conditioning", "sparse-biharmonic", "--resolution", "128"], "sparse-biharmonic trains at resolutions up to 64"),
    (["--crop-scales", "continuous"], "--crop-scales continuous draws crops of natural-patches' photographs; "
     "image-folder has fixed images (drop the flag)"),
    (["--conditioning", "sparse-encoder", "--augment", "photometric,dihedral"], None),
    (["--conditioning", "sparse-encoder", "--augment", "hue"], "unknown augmentation hue; known: none, dihedral, "
     "photometric"),
]


@pytest.mark.parametrize("flags,message", REFUSED)
def test_incompatible_combinations_are_refused_at_start(tmp_path, image_folder, monkeypatch, capsys, flags, message):
    import ddo.plugins

    real = ddo.plugins.load_host
    monkeypatch.setattr(ddo.plugins, "load_host", lambda *a, **k: real(extra_plugins=[_PlainModelPlugin()]))
    out = tmp_path / "run"
    rc = main(tiny_train_args(out, image_folder, "--iterations", "1", *flags))
    err = capsys.readouterr().err
    if message is None:
        assert rc == 0 and (out / "checkpoint.pt").exists()
        return
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_config_json_lists_every_option_in_effect(tmp_path, image_folder):
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "1", "--conditioning", "sparse-encoder",
                                "--mask-pattern", "grid")) == 0
    config = json.loads((run / "config.json").read_text())
    assert {k: config[k] for k in ("context_ratio", "query_ratio", "mask_seed", "mask_pattern",
                                   "context_feature_dim", "augment", "parameterization")} == {
        "context_ratio": 0.1, "query_ratio": 0.1, "mask_seed": 42, "mask_pattern": "grid",
        "context_feature_dim": 32, "augment": "none", "parameterization": "eps"}
    assert "refiner_width" not in config  # an option of other conditioning keys
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert set(ckpt) == {"model", "ema", "optimizer", "step", "config", "rng"}  # only what resume restores
    assert ckpt["config"] == config
    plain = tmp_path / "plain"
    assert main(tiny_train_args(plain, image_folder, "--iterations", "1")) == 0
    assert "mask_seed" not in json.loads((plain / "config.json").read_text())


@pytest.mark.parametrize("flags,message", [
    (["--mask-seed", "7"], "was trained with --mask-seed 42; it cannot change to 7 on --resume (data options"),
    (["--parameterization", "x0"], "was trained with --parameterization eps; it cannot change to x0 on --resume "
     "(architecture options"),
    (["--context-feature-dim", "16"], "was trained with --context-feature-dim 32; it cannot change to 16"),
])
def test_resume_refuses_a_change_of_architecture_or_masks(tmp_path, image_folder, capsys, flags, message):
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "1", "--conditioning", "sparse-encoder",
                                "--mask-seed", "42")) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["train", "--out", str(run), "--resume", "--iterations", "2", "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing written
    # a run option may change
    assert main(["train", "--out", str(run), "--resume", "--iterations", "2", "--no-progress", "--lr", "1e-4"]) == 0


def test_reconstruct_mask_flags_override_the_checkpoint_and_are_reported(tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "1", "--conditioning", "sparse-lift",
                                "--mask-seed", "5", "--mask-pattern", "grid")) == 0
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(run / "checkpoint.pt"), "--images", str(image_folder),
                 "--limit", "2", "--num-samples", "1", "--steps", "2", "--mask-seed", "9", "--out", str(out),
                 "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["masks"] == {"context_ratio": 0.1, "query_ratio": 0.1, "mask_seed": 9, "mask_pattern": "grid",
                          "from_flags": ["mask_seed"]}
    assert (m["sampler"], m["steps"]) == ("denoise", 2)  # an eps model: the ancestral sampler by default
    assert "seed 9 (flags: mask_seed)" in capsys.readouterr().out


def test_option_declarations_are_checked():
    with pytest.raises(ValueError, match="kind must be one of architecture, data, run"):
        Option("x", int, 0, kind="model")
    assert Option("mask_seed").flag == "--mask-seed"


def test_loss_options_are_recorded_and_the_earlier_names_train_the_same(tmp_path, image_folder):
    """The x0 loss family's hyperparameters are options in config.json; a run recorded under an earlier
    loss name (one name per hyperparameter, no options in its configuration) resumes with the same loss."""
    new, old = tmp_path / "new", tmp_path / "old"
    assert main(tiny_train_args(new, image_folder, "--iterations", "2", "--conditioning", "sparse-biharmonic")) == 0
    assert main(tiny_train_args(old, image_folder, "--iterations", "2", "--conditioning", "sparse-biharmonic",
                                "--loss", "x0-mse-relative")) == 0
    config = json.loads((new / "config.json").read_text())
    assert {k: config[k] for k in ("loss", "loss_weighting", "loss_floor", "loss_t1_fraction")} == {
        "loss": "x0-mse", "loss_weighting": "relative", "loss_floor": 1e-4, "loss_t1_fraction": 0.5}
    states = [torch.load(run / "checkpoint.pt", weights_only=True) for run in (new, old)]
    for name, value in states[0]["model"].items():
        torch.testing.assert_close(value, states[1]["model"][name], rtol=0, atol=0)
    # the old run as it was written before the options existed, then both resumed for a third step
    for key in ("loss_weighting", "loss_floor", "loss_t1_fraction"):
        del states[1]["config"][key]
    torch.save(states[1], old / "checkpoint.pt")
    for run in (new, old):
        assert main(["train", "--out", str(run), "--resume", "--iterations", "3", "--no-progress"]) == 0
    resumed = [torch.load(run / "checkpoint.pt", weights_only=True) for run in (new, old)]
    assert resumed[1]["config"]["loss"] == "x0-mse-relative" and "loss_floor" not in resumed[1]["config"]
    for name, value in resumed[0]["model"].items():
        torch.testing.assert_close(value, resumed[1]["model"][name], rtol=0, atol=0)
