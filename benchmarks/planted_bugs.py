"""Plants one bug at a time in a scratch copy of the tree and runs the test that should catch it:
the tests of the reported numbers (metrics, baselines, reconstruction, resume) are checked to fail
when the code they guard is wrong. Prints one line per planted bug and the count caught.

    python benchmarks/planted_bugs.py [substring of a bug's name]
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1])
PLANTS = [
    ("PSNR over all pixels", "ddo_conditional/metrics.py",
     "    if mask is None:\n        mse = err.flatten(1).mean(1)", "    if True:\n        mse = err.flatten(1).mean(1)",
     "tests/test_headline.py::test_psnr_of_a_uniform_error_of_0_1_is_20_db_and_counts_only_the_mask"),
    ("SSIM with the wrong window", "ddo_conditional/metrics.py", "SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5",
     "SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 2.0",
     "tests/test_headline.py::test_ssim_map_equals_scikit_image_and_the_mean_equals_its_score_on_the_same_pixels"),
    ("calibration counts 2.5 std as 2", "ddo_conditional/metrics.py", '"within_2std": float((err <= 2 * s)',
     '"within_2std": float((err <= 2.5 * s)', "tests/test_headline.py::test_calibration_of_a_planted_gaussian_error"),
    ("nearest answered by linear", "ddo_conditional/baselines.py", '    if method != "nearest":',
     '    if True:\n        method = "linear" if method == "nearest" else method',
     "tests/test_headline.py::test_nearest_equals_a_brute_force_nearest_neighbour"),
    ("biharmonic without its final clip", "ddo_conditional/baselines.py", "        return inpaint_biharmonic(known, missing.reshape(h, w), channel_axis=-1)",
     "        return inpaint_biharmonic(known, missing.reshape(h, w), channel_axis=-1) * 1.001",
     "tests/test_headline.py::test_biharmonic_equals_scikit_image_called_directly"),
    ("missing deblur (x0 model ends at alpha_0 x0)", "ddo_conditional/reconstruct.py", "        if s <= 0 and deblur and x0_model:",
     "        if False:", "tests/test_headline.py::test_oracle_reconstruction_is_the_image_with_zero_spread"),
    ("data consistency not applied to the output", "ddo_conditional/reconstruct.py",
     "    return z if observed is None else observed[1] * observed[0] + (1 - observed[1]) * z", "    return z",
     "tests/test_headline.py::test_data_consistency_keeps_the_observed_pixels_equal_to_the_context"),
    ("baselines given other context indices", "ddo_conditional/evaluate.py",
     'preds[m] = baseline_batch(r.truth, r.batch["context_indices"], m)', 'preds[m] = baseline_batch(r.truth, r.batch["query_indices"], m)',
     "tests/test_headline.py::test_evaluate_with_an_oracle_every_ddo_row_beats_every_baseline"),
    ("EMA not restored on resume", "ddo/train.py", '        ema.load_state_dict(state["ema"])\n', "",
     "tests/test_train_cli.py::test_resume_is_bit_exact"),
    ("load_model returns the raw weights", "ddo/train.py", 'weights = state["ema"] if use_ema', 'weights = state["model"] if use_ema',
     "tests/test_train_cli.py::test_load_model_returns_the_ema_weights"),
    ("EMA update with the decay on the wrong side", "ddo/train.py", "1.0 - decay)", "decay)",
     "tests/test_train_cli.py::test_ema_update_is_the_weighted_average"),
    ("optimizer state not restored on resume", "ddo/train.py", '        optimizer.load_state_dict(state["optimizer"])\n', "",
     "tests/test_train_cli.py::test_resume_is_bit_exact"),
    ("forward process without the blur on the mean", "ddo/diffusion.py", "            mean = idct2(log_a.exp() * dct2(x))",
     "            mean = idct2(log_a.exp().mean() * dct2(x))",
     "tests/test_diffusion.py::test_blurred_marginal_has_the_blurred_mean_and_the_noise_fields_mode_variances"),
    ("time projection of the reference's width halved", "ddo/models/fno_unet.py", "self.temb = nn.Linear(temb_ch, 2 * cout)",
     "self.temb = nn.Linear(temb_ch, 2 * cout, bias=False)", "tests/test_models.py::test_parameter_count_follows_the_layout"),
    ("fresh residual model not zero-initialised", "ddo_conditional/models.py",
     "        nn.init.zeros_(base_model.out.weight)  # start as the interpolation itself (a zero residual)\n", "",
     "tests/test_conditional.py::test_fresh_residual_model_is_the_interpolation_and_learns_a_known_residual"),
]
results = []
for name, path, old, new, test in [p for p in PLANTS if len(sys.argv) < 2 or sys.argv[1] in p[0]]:
    dst = os.path.join(tempfile.mkdtemp(prefix="planted-"), "tree")
    shutil.copytree(SRC, dst, ignore=shutil.ignore_patterns("runs", ".git", "__pycache__", "*.egg-info"))
    text = open(f"{dst}/{path}").read()
    assert old in text, (name, old)
    open(f"{dst}/{path}", "w").write(text.replace(old, new, 1))
    env = {**os.environ, "PYTHONPATH": dst}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test], cwd=dst, env=env,
                       capture_output=True, text=True)
    caught = r.returncode != 0
    shutil.rmtree(os.path.dirname(dst), ignore_errors=True)
    results.append((name, test.split("::")[1], caught))
    print(f"{'caught' if caught else 'MISSED'}: {name} -> {test.split('::')[1]}", flush=True)
print(sum(c for *_, c in results), "of", len(results), "planted bugs caught")
