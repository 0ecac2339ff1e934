"""Mutation check, run by hand (not in CI): plant each bug below in a copy of the working tree and run the test
that must catch it.  Every line of the report should read `caught`.

    .venv/bin/python tests/mutations.py            # all of them (~4 min on 2 cores)
    .venv/bin/python tests/mutations.py seed tau   # those whose name contains a word given

A mutation whose text is no longer in its file is reported `stale` (update it with the code it targets).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    test: str  # pytest node id (or -k expression after a space) that must fail


MUTATIONS = [
    Mutation("rmt arm seeded differently from the normal arm", "experiments/train.py",
             "    torch.manual_seed(cfg.seed)\n    if init_ckpt", "    torch.manual_seed(cfg.seed + (cfg.arm == 'rmt'))\n    if init_ckpt",
             "tests/test_train.py::test_arms_start_from_identical_weights_and_only_rmt_prunes"),
    Mutation("tau = 0 in the confidence-bound check", "experiments/confidence_bound.py",
             "    return 2 * math.sqrt(2) * w3.abs()", "    return 0 * math.sqrt(2) * w3.abs()",
             "tests/test_experiments.py -k lemma_tau or confidence_bound_on_width"),
    Mutation("bound check compares with 2 tau", "experiments/confidence_bound.py",
             "(change <= tau).double().mean()", "(change <= 2 * tau).double().mean()",
             "tests/test_experiments.py::test_bound_check_flags_a_violated_bound_and_confident_flips"),
    Mutation("TW term with the authors' exponent in the correct path", "rmt/mp.py",
             "root ** (4.0 / 3.0)", "root**4 / 3.0", "tests/test_mp.py"),
    Mutation("MP CDF returns 0 above the edge in the correct path", "rmt/mp.py",
             "0.0 if compat else 1.0, cdf)", "0.0, cdf)", "tests/test_mp.py"),
    Mutation("pruning keeps the ceiling of the bulk share", "rmt/prune.py",
             "math.floor(keep_fraction * (fit.m - fit.n_spikes))", "math.ceil(keep_fraction * (fit.m - fit.n_spikes))",
             "tests/test_prune.py"),
    Mutation("P4 radius r_i^2 = eps / |lambda_i|", "rmt/limit.py",
             "share = (2 * eps) / (2 * eps + r2 * lam)", "share = eps / (eps + r2 * lam)", "tests/test_limit.py"),
    Mutation("data files not verified", "experiments/data.py",
             "    return None if actual == md5 else", "    return None if True else", "tests/test_data.py"),
    Mutation("failed sweep jobs leave their folders", "experiments/sweeps.py",
             "    shutil.rmtree(folder)\n", "\n",
             "tests/test_hydra.py -k no_empty_run_folder or discarded"),
    Mutation("code-executing pickles loaded", "rmt/io.py",
             "return torch.load(path, map_location=\"cpu\", weights_only=True)",
             "return torch.load(path, map_location=\"cpu\", weights_only=False)",
             "tests/test_rmt_cli.py -k not_checkpoints"),
    Mutation("no fallback to the previous checkpoint", "experiments/checkpoints.py",
             "(run_dir / CHECKPOINT, run_dir / CHECKPOINT_PREV)", "(run_dir / CHECKPOINT,)",
             "tests/test_train.py::test_corrupt_checkpoint_falls_back_then_fails_clearly"),
    Mutation("W&B server not probed before an online run", "experiments/records.py",
             "                why = server_unreachable(server)", "                why = None",
             "tests/test_train.py -k without_route"),
    Mutation("diverged training goes on", "experiments/train.py",
             "        if not math.isfinite(train_loss):", "        if False:",
             "tests/test_train.py::test_diverged_training_is_one_clear_error"),
    Mutation("alpha accepted up to 1 (empty BEMA window)", "experiments/validation.py",
             'Rule(f"{prefix}alpha", float, 0, 0.5, above=True, below=True)', 'Rule(f"{prefix}alpha", float, 0, 1, above=True)',
             "tests/test_validation.py -k alpha"),
    Mutation("config validation skipped", "experiments/train.py",
             "    check_config(cfg, TRAIN_RULES)\n", "\n", "tests/test_validation.py"),
    # issue 16: tolerances derived from error bounds must still see errors far above rounding
    Mutation("Gram-route singular values off by 1e-9 relative", "rmt/spectra.py",
             "    values = lam.flip(-1).clamp_min_(0.0).sqrt_()\n", "    values = lam.flip(-1).clamp_min_(0.0).sqrt_() * (1 + 1e-9)\n",
             "tests/test_spectra.py"),
    Mutation("float64 matrices rounded to float32 before the Gram", "rmt/spectra.py",
             "        w = mat.detach().to(device=device, dtype=torch.float64)\n        if n <= m:",
             "        w = mat.detach().float().to(device=device, dtype=torch.float64)\n        if n <= m:", "tests/test_spectra.py"),
    Mutation("split factors off by 1e-4 relative", "rmt/prune.py",
             "    root = s[:rank].to(vh).sqrt()\n", "    root = s[:rank].to(vh).sqrt() * (1 + 1e-4)\n", "tests/test_prune.py"),
    # issue 18: the run folder against concurrent and killed writers
    Mutation("no writer lock", "rmt/runfolder.py",
             "            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n", "            pass\n",
             "tests/test_runfolder.py -k one_writer or busy_folder"),
    Mutation("rewrites in place", "rmt/runfolder.py",
             "        os.replace(tmp, path)\n    finally:", "        path.write_bytes(data)\n    finally:",
             "tests/test_runfolder.py -k atomic_write"),
    Mutation("torn metrics line kept", "rmt/runfolder.py",
             "    tail = lines.pop()  # \"\" when the file ends with a newline\n", "    tail = ''\n",
             "tests/test_runfolder.py -k torn"),
    Mutation("sweeps into shared folders allowed", "experiments/sweeps.py",
             "        shared = colliding_jobs(config)\n", "        shared = []\n", "tests/test_runfolder.py -k shared_folders"),
    Mutation("unfinished runs counted as seeds", "analysis/runs.py",
             "        if not (run_dir / SUMMARY_JSON).exists():\n            unfinished.append(run_id)\n            continue\n",
             "        if not (run_dir / SUMMARY_JSON).exists():\n            unfinished.append(run_id)\n",
             "tests/test_runfolder.py -k finished_distinct"),
]


def tracked_tree(dest: Path) -> None:
    """Copy the working tree's tracked and untracked-not-ignored files (what CI would see after a commit)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_test(test: str, tree: Path, env: dict) -> int:
    """pytest's exit code for `test` in `tree`: 0 passed, 1 failed, 5 nothing collected."""
    node, _, keyword = test.partition(" -k ")
    args = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", node] + (["-k", keyword] if keyword else [])
    return subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True).returncode


def main(words: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not words or any(w in m.name for w in words)]
    env = {**os.environ, "RMT_DATA_ROOT": os.environ.get("RMT_DATA_ROOT", str(ROOT / "data")), "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory() as tmp:  # a catch means something only if the test passes without the bug
        tracked_tree(Path(tmp))
        failing = [t for t in dict.fromkeys(m.test for m in chosen) if run_test(t, Path(tmp), env) != 0]
    if failing:
        print(f"these tests fail without any planted bug, fix them first: {failing}")
        return 1
    missed = 0
    for m in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp)
            tracked_tree(tree)
            target = tree / m.file
            text = target.read_text()
            if m.old not in text:
                print(f"stale    {m.name}: {m.file} no longer holds the text it mutates")
                missed += 1
                continue
            target.write_text(text.replace(m.old, m.new, 1))
            code = run_test(m.test, tree, env)
            caught = code == 1  # tests failed (5 would mean none ran)
            missed += not caught
            print(f"{'caught' if caught else 'MISSED'}   {m.name}  <-  {m.test}" + ("" if caught else f" (pytest exit {code})"))
    print(f"{len(chosen) - missed} of {len(chosen)} planted bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
