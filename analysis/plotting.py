"""Shared figure plumbing: a headless matplotlib and one way to write PNG + PDF + CSV of plotted values."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["csv_float", "plt", "save_figure", "save_table"]


def csv_float(value: float) -> str:
    """Plotted values rounded to 12 significant digits (then the shortest repr, so floats stay floats: 0.0, not 0):
    float noise of another BLAS thread count or summation order does not change the committed CSVs."""
    return repr(float(f"{value:.12g}"))


def save_figure(fig, values: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Write `<stem>.png`, `<stem>.pdf` and `<stem>.csv` (the plotted values); close the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf"), stem.with_suffix(".csv")]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1], metadata={"CreationDate": None})  # reproducible bytes
    plt.close(fig)
    values.to_csv(paths[2], index=False, float_format=csv_float)
    return paths


def save_table(table: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Write `<stem>.csv` and `<stem>.md` (a Markdown table for the docs)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md")]
    table.to_csv(paths[0], index=False, float_format=csv_float)
    header = "| " + " | ".join(map(str, table.columns)) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = "".join("| " + " | ".join(map(str, row)) + " |\n" for row in table.itertuples(index=False))
    paths[1].write_text(header + body)
    return paths
