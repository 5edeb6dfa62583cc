import json

import pytest
import torch

from ddo.cli import main

from .conftest import assert_states_equal, tiny_train_args


def losses(run):
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run):
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def test_tiny_training_lowers_the_loss_and_sample_writes_png(tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "60", "--log-every", "10")) == 0
    ls = losses(run)
    assert len(ls) == 6 and ls[-1] < 0.7 * ls[0], ls
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["ch"] == 8 and cfg["resolution"] == 16
    png = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(run / "checkpoint.pt"), "--num", "4", "--steps", "3",
                 "--resolution", "32", "--out", str(png), "--no-progress"]) == 0
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)


def test_resume_is_bit_exact(tmp_path, image_folder):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(tiny_train_args(straight, image_folder, "--iterations", "6")) == 0
    assert main(tiny_train_args(split, image_folder, "--iterations", "3")) == 0
    assert main(["train", "--out", str(split), "--resume", "--iterations", "6", "--no-progress"]) == 0
    assert losses(straight) == losses(split)
    a, b = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (straight, split))
    assert a["step"] == 6
    assert_states_equal(a, b)  # weights, EMA, optimizer moments and step count, RNG states


@pytest.mark.parametrize("norm,pointwise", [(None, False), ("group", True)])
def test_bf16_inference_agrees_with_fp32_to_a_stated_tolerance(norm, pointwise):
    """One network in fp32 and in bf16 (trunk, spectral transforms and mixing): outputs within 2.5% (L2)
    and 4% (largest entry) of fp32 (measured at initialisation: 0.3% / 0.5% without norms, 1.9% / 2.2%
    with GroupNorm and pointwise layers, whose residual stream is rounded at every addition); the
    trunk's parameters are bf16 meanwhile, the lifting layer's and the spectral weights fp32;
    switching back restores fp32 exactly."""
    from ddo.models import FNOUNet2d, SpectralConv2d
    from ddo.train import set_inference_dtype

    torch.manual_seed(0)
    net = FNOUNet2d(8, 8, in_channels=3, ch=16, ch_mult=(1, 2), num_res_blocks=1, norm=norm, use_pointwise_op=pointwise)
    z, t = torch.randn(4, 3, 32, 32), torch.rand(4)
    with torch.no_grad():
        ref = net(z, t)
        assert set_inference_dtype(net, torch.bfloat16) == 1
        assert all(m.mix_dtype == torch.bfloat16 for m in net.modules() if isinstance(m, SpectralConv2d))
        dtypes = {n: p.dtype for n, p in net.named_parameters()}
        assert dtypes["lift.weight"] == torch.float32 and dtypes["out.weight"] == torch.bfloat16
        assert all(d == torch.float32 for n, d in dtypes.items() if n.endswith("spectral.weight"))
        out = net(z, t)
        assert out.dtype == torch.float32 and not torch.equal(out, ref)
        assert float((out - ref).norm() / ref.norm()) < 0.025
        assert float((out - ref).abs().max() / ref.abs().max()) < 0.04
        set_inference_dtype(net, None)
        assert all(p.dtype == torch.float32 for p in net.parameters())
        assert torch.equal(net(z, t), ref)


def test_sampling_inside_bf16_autocast_training_uses_fp32_spectral_inference():
    """`ddo train --bf16` samples (no autograd) with the trunk under autocast: the inference path then
    transforms and mixes in fp32 and returns the trunk's dtype; the result stays within autocast's
    rounding of the autograd path under the same autocast."""
    from ddo.models import FNOUNet2d
    from ddo.train import set_autocast

    torch.manual_seed(0)
    net = FNOUNet2d(8, 8, in_channels=3, ch=16, ch_mult=(1, 2), num_res_blocks=1)
    set_autocast(net, torch.bfloat16)
    z, t = torch.randn(2, 3, 32, 32), torch.rand(2)
    want = net(z, t).detach()
    with torch.no_grad():
        got = net(z, t)
    assert got.dtype == torch.float32
    assert float((got - want).norm() / want.norm()) < 0.02


def test_ema_update_is_the_weighted_average():
    from ddo.train import update_ema

    torch.manual_seed(0)
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    update_ema(ema, model, 0.9)
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * model.state_dict()[k])


def test_load_model_returns_the_ema_weights(tmp_path, image_folder):
    from ddo.plugins import load_host
    from ddo.train import load_model

    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "3", "--ema-decay", "0.5")) == 0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert any(not torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in ckpt["model"])
    for use_ema, key in ((True, "ema"), (False, "model")):
        gen_sde, _, _ = load_model(run / "checkpoint.pt", load_host(), use_ema=use_ema)
        state = gen_sde.network.state_dict()
        assert all(torch.equal(state[k], ckpt[key][k]) for k in state)


def test_bf16_training_tracks_fp32_and_keeps_fp32_weights(tmp_path, image_folder):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    assert main(tiny_train_args(fp32, image_folder, "--iterations", "20", "--log-every", "5")) == 0
    assert main(tiny_train_args(bf16, image_folder, "--iterations", "20", "--log-every", "5", "--bf16")) == 0
    a, b = losses(fp32), losses(bf16)
    assert len(a) == len(b) == 4 and a != b  # autocast did change the arithmetic
    assert all(abs(x - y) < 0.1 * x for x, y in zip(a, b)), (a, b)
    w = weights(bf16)
    assert all(t.dtype == torch.float32 for t in w.values())
    assert json.loads((bf16 / "config.json").read_text())["bf16"] is True


def test_spectral_parts_stay_fp32_under_autocast():
    from ddo.models import FNOUNet2d, SpectralConv2d, fourier_resample
    from ddo.train import set_autocast

    torch.manual_seed(0)
    layer, x = SpectralConv2d(4, 4, 6, 6), torch.randn(2, 4, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, r = layer(x), fourier_resample(x, (8, 8))
    assert y.dtype == r.dtype == torch.float32
    torch.testing.assert_close(y, layer(x))
    torch.testing.assert_close(r, fourier_resample(x, (8, 8)))
    net = FNOUNet2d(4, 4, in_channels=3, ch=8, ch_mult=(1, 2), num_res_blocks=1, norm="group")
    z, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    with torch.no_grad():
        ref = net(z, t)
        assert set_autocast(net, torch.bfloat16) == 1
        out = net(z, t)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05 * float(ref.abs().max()))


def test_existing_run_is_not_overwritten(tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "1")) == 0
    before = (run / "checkpoint.pt").read_bytes()
    assert main(tiny_train_args(run, image_folder, "--iterations", "1")) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before
    assert main(["train", "--out", str(run), "--resume", "--ch", "16", "--iterations", "2"]) == 2
    assert "was trained with --ch 8; it cannot change to 16 on --resume" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["train", "--out", "o", "--iterations", "0"], "expected a positive integer"),
    (["train", "--out", "o", "--iterations", "1", "--dataset", "mnist"], "unknown dataset 'mnist'; known: cifar10"),
    (["train", "--out", "o", "--iterations", "1", "--loss", "l2"], "unknown loss 'l2'"),
    (["train", "--out", "o"], "give --iterations N or --minutes M"),
    (["train", "--out", "o", "--iterations", "1", "--dataset", "cifar10", "--data-root", "nowhere"],
     "no cifar-10-batches-py folder"),
    (["train", "--out", "o", "--iterations", "1", "--ch-mult", "1,x"], "comma-separated integers"),
    (["train", "--out", "o", "--iterations", "1", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "--out", "o", "--iterations", "1", "--disp-method", "cosine"], "unknown dissipation schedule"),
    (["train", "--out", "o", "--iterations", "1", "--device", "cuda:7"], "cuda"),
    (["sample", "--checkpoint", "missing.pt", "--out", "g.png"], "checkpoint missing.pt does not exist"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    if "cuda:7" in argv and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "config": {}}, bad)
    assert main(["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "pwned" not in err and len(err.strip().splitlines()) == 1


def test_truncated_checkpoint_is_one_clear_line(tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "1")) == 0
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["sample", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "g.png")]) == 2
    assert "truncated or corrupted" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


class _NaNLoss:
    import ddo as _ddo

    @_ddo.hookimpl
    def register_losses(self, register):
        def factory():
            def loss(gen_sde, batch, v, model_kwargs):
                out = gen_sde.dsm(batch["image"], v, **model_kwargs)
                return {"loss": out * float("nan")}
            return loss
        register("nan-loss", factory)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, image_folder, monkeypatch, capsys):
    import ddo.plugins

    real = ddo.plugins.load_host
    monkeypatch.setattr(ddo.plugins, "load_host", lambda *a, **k: real(extra_plugins=[_NaNLoss()]))
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "2")) == 0
    before = (run / "checkpoint.pt").read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--iterations", "4", "--loss", "nan-loss", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "the loss became non-finite at step 2" in err and len(err.strip().splitlines()) == 1
    assert (run / "checkpoint.pt").read_bytes() == before


def test_negative_mask_seed_is_refused(tmp_path, image_folder, capsys):
    assert main(tiny_train_args(tmp_path / "r", image_folder, "--iterations", "1", "--conditioning", "sparse-lift",
                                "--mask-seed", "-3")) == 2
    assert "--mask-seed: expected a non-negative integer, got -3" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cosine_schedule_decays_the_logged_rate_over_the_iterations(tmp_path, image_folder):
    import math

    from ddo.train import _lr, _progress

    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "4", "--lr-schedule", "cosine")) == 0
    lrs = [json.loads(ln)["lr"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([2e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)])
    cfg = {"lr": 1.0, "warmup": 10, "lr_schedule": "cosine"}
    assert _lr(cfg, 4, 0.5) == pytest.approx(0.5 * 0.5)                     # warm-up times the cosine
    assert _lr({**cfg, "lr_schedule": "constant"}, 20, 0.9) == 1.0
    # with both limits, the one nearer its end sets the progress
    assert _progress(10, 100, started=0.0, deadline=60.0, now=30.0) == pytest.approx(0.5)
    assert _progress(80, 100, started=0.0, deadline=60.0, now=30.0) == pytest.approx(0.8)
    assert _progress(5, math.inf, started=0.0, deadline=math.inf, now=99.0) == 0.0


def test_inference_dtype_choices(monkeypatch):
    """``--bf16`` asks for bf16 (refused on a CPU without native bf16), ``auto`` takes it where it was
    measured faster (bf16_pays), ``False`` is fp32."""
    import ddo.commands as commands
    from ddo.errors import UserError

    cpu = torch.device("cpu")
    assert commands.inference_dtype(False, cpu) is None
    for pays in (True, False):
        monkeypatch.setattr(commands, "bf16_pays", lambda device, pays=pays: pays)
        assert commands.inference_dtype("auto", cpu) == (torch.bfloat16 if pays else None)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(UserError, match="no native bf16"):
        commands.inference_dtype(True, cpu)


def test_precision_auto_is_measured_on_cpus_with_native_bf16(monkeypatch):
    """``--precision auto`` on a CPU: never bf16 without native bf16 (the probe is not even run); with it,
    bf16 exactly when the probe measures it at least BF16_MIN_SPEEDUP faster, measured once per process."""
    import ddo.commands as commands

    cpu, calls = torch.device("cpu"), []

    def probe(ratio):
        return lambda: calls.append(ratio) or ratio

    monkeypatch.setattr(commands, "_BF16_PAYS", {})
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert commands.bf16_pays(cpu, probe(9.0)) is False and calls == []
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for ratio, pays in ((commands.BF16_MIN_SPEEDUP - 0.01, False), (commands.BF16_MIN_SPEEDUP, True), (0.2, False)):
        monkeypatch.setattr(commands, "_BF16_PAYS", {})
        assert commands.bf16_pays(cpu, probe(ratio)) is pays
        assert commands.bf16_pays(cpu, probe(1 / ratio)) is pays  # measured once: the second probe is not run
    assert calls == [commands.BF16_MIN_SPEEDUP - 0.01, commands.BF16_MIN_SPEEDUP, 0.2]


def test_identical_runs_write_identical_checkpoints(tmp_path, image_folder):
    """The same command writes the same checkpoint, tensor for tensor, whatever state the process's
    global generators were in before (as in two separate processes): every generator the run saves
    is seeded from --seed."""
    import random

    import numpy as np

    from .conftest import state_tensors

    states = []
    for i, run in enumerate((tmp_path / "a", tmp_path / "b")):
        np.random.seed(1000 + i)  # a different history of the global generators before each run
        random.seed(1000 + i)
        torch.manual_seed(1000 + i)
        assert main(tiny_train_args(run, image_folder, "--iterations", "3")) == 0
        states.append(torch.load(run / "checkpoint.pt", weights_only=True))
    a, b = (state_tensors(s) for s in states)
    assert a.keys() == b.keys() and "/rng/numpy/keys" in a and "/rng/python/state/0" in a
    for k in a:
        if torch.is_tensor(a[k]):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k
