"""Analysis: local and W&B loaders give one DataFrame shape; fig1 drawn from runs."""

import json
import types
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main as analysis_main
from analysis.curves import CURVE_FIGURES, curve_values, plot_curves
from analysis.runs import (
    METRIC_COLUMNS,
    RUN_COLUMNS,
    export_records,
    load_runs,
    load_wandb_runs,
)
from experiments import train

FIG1 = CURVE_FIGURES["fig1"]
PANELS = FIG1.panels
FIXTURE = Path(__file__).parent / "fixtures" / "wandb_fig1_smoke.json"


class RecordedApi:
    """Serves a recorded W&B API response: `runs(path, filters)` -> runs with config, summary, scan_history()."""

    def __init__(self, path: Path):
        self.data = json.loads(path.read_text())
        self.asked = []

    def runs(self, path, filters=None):
        self.asked.append((path, filters))
        assert path == self.data["path"]
        return [types.SimpleNamespace(id=r["id"], name=r["name"], config=r["config"], summary=r["summary"],
                                      scan_history=lambda r=r: iter(r["history"])) for r in self.data["runs"]]


@pytest.fixture(scope="module")
def fig1_runs(tmp_path_factory, data_root):
    """A real fig1 sweep (smoke profile, 3 epochs) in a local runs folder."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    runs = tmp_path_factory.mktemp("runs")
    for panel in PANELS:
        for arm in ("normal", "rmt"):
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                cfg = compose(config_name="train", overrides=[
                    "experiment=fig1", f"panel={panel}", f"arm={arm}", "profile=smoke", "logger=local",
                    "progress=false", "log_spectra=false", f"paths.runs_dir={runs}", f"paths.data_dir={data_root}"])
            train.run(cfg)
    return runs


def test_local_loader_reads_every_run(fig1_runs):
    df = load_runs(fig1_runs)
    assert list(df.columns) == RUN_COLUMNS + METRIC_COLUMNS
    assert df["run_id"].nunique() == 10 and set(df["arm"]) == {"normal", "rmt"}
    assert (df.groupby("run_id")["epoch"].max() == 4).all()  # smoke: 4 of the 350 P1 epochs
    pruned = df[df["arm"] == "rmt"]
    assert (pruned["params_final"] < pruned["params_start"]).all()


def test_wandb_loader_matches_local_shape():
    api = RecordedApi(FIXTURE)
    df = load_wandb_runs("rmt-lab/rmt-pruning", api=api)
    assert api.asked == [("rmt-lab/rmt-pruning", {})]
    assert list(df.columns) == RUN_COLUMNS + METRIC_COLUMNS
    assert df["run_id"].nunique() == 10 and not df[["test_acc", "params", "params_start"]].isna().any().any()
    first = api.data["runs"][0]
    row = df[(df["run_id"] == f"fig1/{first['config']['run_name']}") & (df["epoch"] == 1)].iloc[0]
    assert row["test_acc"] == first["history"][0]["test_acc"] and row["arm"] == first["config"]["arm"]


def test_wandb_and_local_frames_have_same_dtypes(fig1_runs):
    local = load_runs(fig1_runs)
    remote = load_wandb_runs("rmt-lab/rmt-pruning", api=RecordedApi(FIXTURE))
    for col in ("epoch", "test_acc", "params", "seed"):
        assert local[col].dtype.kind == remote[col].dtype.kind, col


def test_fig1_from_local_runs_writes_png_pdf_csv(fig1_runs, tmp_path):
    paths = plot_curves(load_runs(fig1_runs), FIG1, tmp_path)
    assert [p.name for p in paths] == ["fig1.png", "fig1.pdf", "fig1.csv"]
    assert all(p.stat().st_size > 1000 for p in paths[:2])
    values = pd.read_csv(paths[2])
    assert set(values["panel"]) == set(PANELS) and set(values["series"]) == {"normal", "rmt"}
    assert len(values) == 5 * 2 * 4


def test_fig1_cli_from_wandb_fixture_and_exported_records(fig1_runs, tmp_path, monkeypatch):
    exported = tmp_path / "results"
    assert export_records(fig1_runs, exported) == 10
    assert not list(exported.rglob("*.pt"))
    assert analysis_main(["fig1", "--runs", str(exported), "--out", str(tmp_path / "a")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "fig1.csv"), curve_values(load_runs(fig1_runs), "fig1", PANELS))
    import analysis.runs as runs_mod

    monkeypatch.setattr(runs_mod, "load_wandb_runs", lambda path: load_wandb_runs(path, api=RecordedApi(FIXTURE)))
    monkeypatch.setattr("analysis.__main__.load_wandb_runs", runs_mod.load_wandb_runs)
    assert analysis_main(["fig1", "--wandb", "rmt-lab/rmt-pruning", "--out", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / "fig1.png").exists()


def test_missing_runs_and_mixed_profiles_are_clear_errors(tmp_path, fig1_runs, capsys):
    assert analysis_main(["fig1", "--runs", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert analysis_main(["export", "--runs", str(tmp_path / "nothing"), "--to", str(tmp_path / "out")]) == 1
    assert "no run records below" in capsys.readouterr().err and not (tmp_path / "out").exists()
    df = load_runs(fig1_runs)
    mixed = pd.concat([df, df.assign(profile="paper", run_id=df["run_id"] + "p")])
    with pytest.raises(ValueError, match="several profiles"):
        curve_values(mixed, "fig1", PANELS)
    assert curve_values(mixed, "fig1", PANELS, profile="paper")["profile"].eq("paper").all()


def test_figure_csvs_do_not_carry_float_noise(tmp_path):
    """The same values up to round-off (another summation order or thread count) give byte-identical CSVs."""
    import pandas as pd

    from analysis.plotting import plt, save_figure, save_table

    a = pd.DataFrame({"x": [0.1 + 0.2, 1 / 3 * 3, 2.0 ** 0.5 * 2.0 ** 0.5], "n": [1, 2, 3]})
    b = pd.DataFrame({"x": [0.3, 1.0, 2.0], "n": [1, 2, 3]})
    assert (a["x"] != b["x"]).any()  # they do differ in the last bits
    for name, frame in (("a", a), ("b", b)):
        save_figure(plt.figure(), frame, tmp_path / name)
        save_table(frame, tmp_path / f"t{name}")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "ta.csv").read_bytes() == (tmp_path / "tb.csv").read_bytes()
