"""Training at several resolutions in one run (``--resolutions``): which batch each step reads, the
configuration it resolves to, and a run that trains, resumes and reconstructs across sizes."""
import itertools
import json

import pytest
import torch

from ddo.batching import EpochItems, StepBatches, epoch_batches, part_seed
from ddo.cli import main
from ddo.config import resolve
from ddo.data import RandomFlip
from ddo.errors import UserError

from .conftest import tiny_train_args


def _steps(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_one_part_reads_the_batches_of_a_seeded_permutation_per_epoch():
    got = _steps(StepBatches(10, 4, 3, 0), 6)  # two batches per epoch
    want = [[(0, e, i) for i in b] for e in range(3) for b in epoch_batches(10, 4, 3, e)]
    assert got == want
    # the permutations single-resolution runs have always read (a change would change every run's batches)
    assert [[i for _, _, i in b] for b in got[:4]] == [[3, 6, 8, 9], [4, 5, 1, 7], [3, 5, 7, 9], [8, 4, 6, 1]]
    assert _steps(StepBatches(10, 4, 3, 3), 3) == got[3:6]  # resumed at step 3
    assert part_seed(3, 0) == 3 and part_seed(3, 1) != 3


def test_the_largest_seeds_draw_batches_for_every_part():
    got = _steps(StepBatches([10, 7], 2, 2 ** 63 - 1, 0), 4)
    assert [b[0][0] for b in got] == [0, 1, 0, 1] and all(len(b) == 2 for b in got)


def test_parts_take_turns_and_each_follows_its_own_epochs():
    got = _steps(StepBatches([10, 7], 3, 5, 0), 12)
    assert [b[0][0] for b in got] == [0, 1] * 6  # part of every step
    part1 = [b for b in got if b[0][0] == 1]  # 2 batches of 3 per epoch of 7 images
    want = [[(1, e, i) for i in b] for e in range(3) for b in epoch_batches(7, 3, part_seed(5, 1), e)]
    assert part1 == want
    part0 = [b for b in got if b[0][0] == 0]
    assert part0 == [[(0, e, i) for i in b] for e in range(2) for b in epoch_batches(10, 3, 5, e)][:6]


@pytest.mark.parametrize("sizes", [[10, 7], [9, 12, 6]])
def test_a_resumed_sampler_continues_where_the_run_stopped_and_ranks_split_each_batch(sizes):
    full = _steps(StepBatches(sizes, 2, 1, 0), 20)
    for start in (1, 5, 7, 13):
        assert _steps(StepBatches(sizes, 2, 1, start), 20 - start) == full[start:]
    ranks = [_steps(StepBatches(sizes, 2, 1, 3, rank=r, world=2), 8) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == full[3:11]


def test_epoch_items_read_each_part_with_its_own_flips():
    sources, parts = [], []
    for res in (4, 8):
        images = [{"image": torch.arange(3 * res * res, dtype=torch.float32).reshape(3, res, res) + i, "index": i}
                  for i in range(6)]
        sources.append(images)
        flipped = RandomFlip(images, seed=2)
        parts.append((flipped, flipped))
    items = EpochItems(parts)
    assert len(items) == 12
    sampler = StepBatches([6, 6], 3, 0, 0)
    loader = torch.utils.data.DataLoader(items, batch_sampler=sampler)
    for keys, batch in zip(itertools.islice(iter(sampler), 10), itertools.islice(loader, 10)):
        part = keys[0][0]
        assert tuple(batch["image"].shape[-2:]) == ((4, 4), (8, 8))[part]
        for (p, epoch, i), image in zip(keys, batch["image"]):
            reference = RandomFlip(sources[p], seed=2)  # the part's flips at its own epoch
            reference.set_epoch(epoch)
            assert torch.equal(image, reference[i]["image"]), (p, epoch, i)
    assert {k[0][1] for k in itertools.islice(iter(sampler), 10)} == {0, 1, 2}  # epochs advance per part


def test_resolutions_resolve_to_a_nominal_resolution_and_refuse_what_cannot_work():
    assert resolve({"resolutions": [32, 64]})["resolution"] == 32
    config = resolve({"resolutions": [32, 64], "resolution": 64})
    assert config["resolution"] == 64 and config["resolutions"] == [32, 64]
    one = resolve({"resolutions": [16]})
    assert one["resolution"] == 16 and one["resolutions"] is None  # one resolution is the plain run
    assert resolve({})["resolutions"] is None
    with pytest.raises(UserError, match="--resolution 48 is not among --resolutions 32,64"):
        resolve({"resolutions": [32, 64], "resolution": 48})


def _one_line_refusal(capsys, argv, *words):
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], lines[0]


def test_a_run_at_two_resolutions_trains_resumes_and_reconstructs_at_both(image_folder, tmp_path, capsys,
                                                                         monkeypatch):
    import ddo.train as train_module

    from .conftest import state_tensors

    sizes, accumulate = [], train_module._accumulate

    def recording(gen_sde, loss_fn, wrapper, batch, *args):
        sizes.append(batch["image"].shape[-1])
        return accumulate(gen_sde, loss_fn, wrapper, batch, *args)

    monkeypatch.setattr(train_module, "_accumulate", recording)
    run = tmp_path / "run"
    base = [a for a in tiny_train_args(run, image_folder) if a not in ("--resolution", "16")]
    flags = ["--conditioning", "sparse-biharmonic", "--parameterization", "x0", "--loss", "x0-mse", "--loss-weighting", "relative", "--loss-floor", "1e-4"]
    _one_line_refusal(capsys, ["train", *base[1:], *flags, "--resolutions", "8,8", "--iterations", "1"],
                      "--resolutions", "distinct")
    _one_line_refusal(capsys, ["train", *base[1:], *flags, "--resolutions", "8,2", "--iterations", "1"],
                      "--resolutions 2 is too small")
    assert not run.exists()
    assert main(["train", *base[1:], *flags, "--resolutions", "8,16", "--iterations", "2"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["resolutions"] == [8, 16] and config["resolution"] == 8
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    _one_line_refusal(capsys, ["train", "--out", str(run), "--resume", "--resolutions", "8", "--iterations", "3"],
                      "trained with --resolutions 8,16; it cannot change to unset")
    _one_line_refusal(capsys, ["train", *base[1:], "--out", str(tmp_path / "r2"), "--conditioning", "sparse-lift",
                               "--resolutions", "16,8", "--context-ratio", "0.01", "--iterations", "1"],
                      "leaves no context pixel on a 8x8 image")
    assert main(["train", "--out", str(run), "--resume", "--iterations", "3", "--no-progress"]) == 0
    assert sizes == [8, 16, 8]  # the sizes take turns, and the resumed run continues the turn
    straight = tmp_path / "straight"  # three steps at once write the same checkpoint as two, then one more
    assert main(["train", *[a if a != str(run) else str(straight) for a in base[1:]], *flags, "--resolutions", "8,16",
                 "--iterations", "3"]) == 0
    assert sizes == [8, 16, 8, 8, 16, 8]
    a, b = (state_tensors(torch.load(r / "checkpoint.pt", weights_only=True)["model"]) for r in (run, straight))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for res in ("8", "16"):
        out = tmp_path / f"rec{res}"
        assert main(["reconstruct", "--checkpoint", str(run / "checkpoint.pt"), "--images", str(image_folder),
                     "--resolution", res, "--limit", "2", "--num-samples", "1", "--steps", "1", "--out", str(out),
                     "--no-progress"]) == 0
        record = json.loads((out / "metrics.json").read_text())
        assert torch.isfinite(torch.tensor(record["methods"]["ddo-sample"]["psnr_query"]))
