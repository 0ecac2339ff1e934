"""Tables from run summaries: the P2 parameter table (start / final parameters and split topology)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.plotting import save_table
from rmt.runfolder import SUMMARY_JSON


def p2_params(topology: list[int]) -> int:
    """P2's count: every listed layer with a bias, sum d_i d_{i+1} + sum_{i>=1} d_i."""
    return sum(a * b for a, b in zip(topology[:-1], topology[1:])) + sum(topology[1:])


def p2_parameter_table(root: str | Path) -> pd.DataFrame:
    """One row per example: accuracies of both arms, parameters (ours and P2's convention), final split topology."""
    rows = {}
    for path in sorted(Path(root).rglob(SUMMARY_JSON)):
        s = json.loads(path.read_text())
        config_panel = s["run_name"].split("-")[0]
        row = rows.setdefault(config_panel, {"example": config_panel.replace("p2_ex", "").replace("_", "."),
                                             "topology_start": json.dumps(s["topology_start"]), "epochs": s["epochs"]})
        arm = "split" if s["arm"] == "rmt" else "non_split"
        row[f"{arm}_final_acc"] = round(100 * s["final_test_acc"], 2)
        row[f"{arm}_best_acc"] = round(100 * s["best_test_acc"], 2)
        row[f"{arm}_params"] = s["params_final"]
        if arm == "split":
            row["split_topology"] = json.dumps(s["topology_final"])
            row["split_params_p2_convention"] = p2_params(s["topology_final"])
        else:
            row["non_split_params_p2_convention"] = p2_params(s["topology_final"])
    if not rows:
        raise FileNotFoundError(f"no P2 example runs below {root}: run `make reproduce-p2-examples` first")
    return pd.DataFrame(list(rows.values()))


def write_p2_parameter_table(root: str | Path, out_dir: str | Path) -> list[Path]:
    return save_table(p2_parameter_table(root), Path(out_dir) / "p2_parameter_table")
