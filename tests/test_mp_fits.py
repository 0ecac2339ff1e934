"""experiments.mp_fits (layer MP fits of a trained run from its record) and the two rules on its records: P2 Ex. 4.4's
Tables 1/2 (`analysis.esd.measure_p2_ex4_4_esd`) and P3's ViT diagnostics (`analysis.p3_vit_mp.measure_p3_vit_mp`).
No training: the source runs are hand-made records of spiked random matrices."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.__main__ import main as analysis_main
from analysis.esd import measure_p2_ex4_4_esd
from analysis.p3_vit_mp import measure_p3_vit_mp, trend
from analysis.verdicts import NOT_RUN, PARTLY, REPRODUCED, VERDICTS
from experiments import mp_fits
from experiments.errors import RunConfigError
from tests.conftest import compose_named

ROOT = Path(__file__).resolve().parent.parent


def fake_training_run(folder: Path, shapes: dict[str, tuple[int, int]], spikes: int = 3, seed: int = 0) -> Path:
    """A finished training record (config with `effective`, summary, spectra.csv) of noise + a rank-`spikes` signal."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, (out, fan_in) in shapes.items():
        w = rng.standard_normal((out, fan_in)) * 0.05
        k = min(spikes, out, fan_in)
        w += 2.0 * rng.standard_normal((out, k)) @ rng.standard_normal((k, fan_in)) / np.sqrt(fan_in)
        rows += [{"layer": name, "out": out, "fan_in": fan_in, "index": i, "singular_value": s}
                 for i, s in enumerate(np.linalg.svd(w, compute_uv=False))]
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"kind": "train", "name": "fake", "run_name": folder.name,
                                                        "effective": {"sizes": [0]}}))
    (folder / "summary.json").write_text('{"topology_start": [1], "topology_final": [1], "final_test_acc": 0.5}')
    pd.DataFrame(rows).to_csv(folder / "spectra.csv", index=False)
    return folder


VIT = {"patch_embed.proj": (48, 16), **{f"blocks.{b}.{m}": s for b in range(2) for m, s in
                                        (("attn.qkv", (144, 48)), ("attn.proj", (48, 48)), ("mlp.fc1", (192, 48)),
                                         ("mlp.fc2", (48, 192)))}, "head": (10, 48)}


def test_mp_fits_record_and_p3_rule(tmp_path):
    source = fake_training_run(tmp_path / "src", VIT)
    run_dir = tmp_path / "results" / "p3_vit_mp" / "quick" / "vit-s0"
    cfg = compose_named("mp_fits", f"source_run={source}", f"run_dir={run_dir}", "null_draws=5")
    summary = mp_fits.run(cfg)
    layers = pd.read_csv(run_dir / "layers.csv")
    sweep = pd.read_csv(run_dir / "alpha_sweep.csv")
    assert list(layers["layer"]) == list(VIT) and summary["n_layers"] == len(VIT)
    assert (run_dir / "spectra.csv").read_bytes() == (source / "spectra.csv").read_bytes()  # the record redraws ESDs alone
    # a layer fits when its GoF is below the threshold; the rank-3 signal shows as spikes (beta 0.8 puts the edge
    # slightly inside the bulk, so the largest noise value may count too)
    assert list(layers["fits_mp"]) == list(layers["fitted"] & (layers["gof"] < cfg.gof_threshold))
    assert 3 <= layers.set_index("layer").loc["blocks.0.mlp.fc1", "n_spikes"] <= 5
    # the budget is P3's floor(q r_1 nnz) with q = ((1 - err) bulk)^1.5
    q = ((1 - layers["gof"]) * layers["bulk_fraction"]) ** 1.5
    assert np.allclose(layers["budget_q"], q) and list(layers["budget_count"]) == list(np.floor(q * 0.0612 * layers["numel"]).astype(int))
    # at alpha 0.45 the 10- and 16-value spectra keep < 2 eigenvalues in the BEMA window: unfitted there, and
    # left out of the sweep means at every alpha
    unfitted = sweep[~sweep["fitted"]]
    assert set(unfitted["layer"]) == {"head", "patch_embed.proj"} and set(unfitted["alpha"]) == {0.45}
    assert len(summary["alpha_sweep_layers"]) == len(VIT) - 2 and len(summary["alpha_sweep"]) == 10
    # the rule reads the record only; without one it is 'not run'
    outcome = measure_p3_vit_mp(tmp_path / "results")
    assert outcome.verdict in VERDICTS and outcome.verdict != NOT_RUN and len(outcome.parts) == 4
    assert outcome.numbers == measure_p3_vit_mp(tmp_path / "results").numbers
    assert measure_p3_vit_mp(tmp_path / "nothing").verdict == NOT_RUN
    out = tmp_path / "fig"
    assert analysis_main(["p3-vit-mp", "--run", str(run_dir), "--out", str(out)]) == 0
    assert (out / "p3_vit_mp.png").exists() and (out / "p3_vit_mp_layers.md").exists() and (out / "p3_vit_mp_alpha.csv").exists()
    assert analysis_main(["esd", "--run", str(run_dir), "--name", "esd", "--alpha", "0.25", "--beta", "0.8",
                          "--gof-threshold", "0.135", "--out", str(out)]) == 0
    grid = pd.read_csv(out / "esd.csv")
    assert np.allclose(grid["gof"], layers["gof"]) and list(grid["fits_mp"]) == list(layers["fits_mp"])


def test_p2_esd_rule_counts_layers_within_gamma_or_the_noise_floor(tmp_path):
    results = tmp_path / "results"
    assert measure_p2_ex4_4_esd(results).verdict == NOT_RUN
    shapes = {"1": (60, 125), "3": (60, 60), "5": (20, 60), "7": (10, 20)}
    for arm, spikes in (("normal", 2), ("rmt", 20)):
        source = fake_training_run(tmp_path / f"src-{arm}", shapes, spikes=spikes)
        cfg = compose_named("mp_fits", "name=p2_esd", f"source_run={source}", "alpha=0.2", "beta=0.1", "gof_threshold=0.012",
                            f"run_dir={results}/p2_esd/quick/p2_ex4_4-{arm}-s0", "null_draws=5", "alpha_grid=[0.2]")
        mp_fits.run(cfg)
    outcome = measure_p2_ex4_4_esd(results)
    assert [p.name for p in outcome.parts] == ["non-split", "split"] and outcome.verdict in VERDICTS
    layers = pd.read_csv(results / "p2_esd/quick/p2_ex4_4-normal-s0/layers.csv", dtype={"layer": str})
    hidden = layers.iloc[:-1]
    fits = (hidden["gof"] < np.maximum(0.012, hidden["gof_null_q95"])).sum()
    assert outcome.parts[0].evidence.startswith(f"{fits} of 3 hidden layers fit")
    # the rule needs the runs' own fit settings
    cfg = compose_named("mp_fits", "name=p2_esd", f"source_run={tmp_path / 'src-rmt'}", "alpha_grid=[0.2]", "null_draws=5",
                        f"run_dir={results}/p2_esd/quick/p2_ex4_4-rmt-s0")
    mp_fits.run(cfg)
    with pytest.raises(ValueError, match="the rule needs"):
        measure_p2_ex4_4_esd(results)


def test_mp_fits_refuses_bad_sources_and_settings_before_writing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        mp_fits.run(compose_named("mp_fits", f"source_run={tmp_path}/none", f"run_dir={tmp_path}/x"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("kind: rank_sweep\n")
    with pytest.raises(RunConfigError, match="not a training run"):
        mp_fits.run(compose_named("mp_fits", f"source_run={other}", f"run_dir={tmp_path}/x"))
    source = fake_training_run(tmp_path / "src", {"1": (30, 20)})
    with pytest.raises(RunConfigError, match="alpha_grid"):
        mp_fits.run(compose_named("mp_fits", f"source_run={source}", f"run_dir={tmp_path}/x", "alpha_grid=[0.5]"))
    assert not (tmp_path / "x").exists()


def test_trend_tolerates_small_steps_against_the_direction():
    assert trend([0.9, 0.85, 0.82, 0.821], -1) and not trend([0.9, 0.85, 0.80, 0.83], -1)
    assert trend([1, 2, 3], +1) and not trend([1, 1], +1) and not trend([3, 2, 1], +1)


@pytest.mark.parametrize("measure, expected", [(measure_p2_ex4_4_esd, PARTLY), (measure_p3_vit_mp, REPRODUCED)])
def test_committed_records_give_the_stated_verdicts(measure, expected, tmp_path):
    results = ROOT / "results"
    outcome = measure(results)
    if outcome.verdict == NOT_RUN:
        pytest.skip("records not committed")
    assert outcome.verdict == expected
    copy = tmp_path / "results"  # the rule reads records, nothing else
    for sub in ("p2_esd", "p3_vit_mp"):
        if (results / sub).exists():
            shutil.copytree(results / sub, copy / sub)
    assert measure(copy).numbers == outcome.numbers
