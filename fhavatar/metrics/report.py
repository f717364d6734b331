"""Tables in the layout of the paper's Tab. 1/2 (Markdown and CSV), with the paper's own numbers beside ours.

Labelled substitutes that the paper has no column for (`SUBSTITUTE_COLUMNS`: CSIM (dlib)) are shown right after the
paper's column they stand in for, whenever a row or a note has them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["COLUMNS", "PAPER_ROWS", "SUBSTITUTE_COLUMNS", "format_markdown_table", "table_columns", "write_csv_table"]

#: (key, setting, header) of every column, in the paper's order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("self_psnr", "Self-reenactment", "PSNR ↑"),
    ("self_ssim", "Self-reenactment", "SSIM ↑"),
    ("self_lpips", "Self-reenactment", "LPIPS ↓"),
    ("self_csim", "Self-reenactment", "CSIM ↑"),
    ("self_akd", "Self-reenactment", "AKD ↓"),
    ("self_aed", "Self-reenactment", "AED ↓"),
    ("self_apd", "Self-reenactment", "APD ↓"),
    ("cross_csim", "Cross-identity", "CSIM ↑"),
    ("cross_aed", "Cross-identity", "AED ↓"),
    ("cross_apd", "Cross-identity", "APD ↓"),
)
_KEYS = tuple(key for key, _, _ in COLUMNS)
#: (key, setting, header, the paper's column it follows) of the labelled substitutes (`fhavatar.metrics.identity`).
SUBSTITUTE_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("self_csim_dlib", "Self-reenactment", "CSIM (dlib) ↑", "self_csim"),
    ("cross_csim_dlib", "Cross-identity", "CSIM (dlib) ↑", "cross_csim"),
)

#: The paper's "Ours" rows (Tab. 1: VFHQ test split; Tab. 2: 20 HDTF videos), for reference only: other data,
#: the paper's trained model, and its own metric networks.
PAPER_ROWS: dict[str, dict[str, float]] = {
    "paper, FHAvatar on VFHQ (Tab. 1)": dict(zip(_KEYS, (23.24, 0.7995, 0.2384, 0.8012, 2.798, 0.3634, 0.8660,
                                                        0.6757, 0.7103, 2.3661))),
    "paper, FHAvatar on HDTF (Tab. 2)": dict(zip(_KEYS, (26.61, 0.8642, 0.1900, 0.8622, 2.287, 0.3318, 0.5286,
                                                        0.8568, 0.7347, 1.5605))),
}

#: Decimals per column when printing (as in the paper).
_DECIMALS = {"psnr": 2, "ssim": 4, "lpips": 4, "csim": 4, "csim_dlib": 4, "akd": 3, "aed": 4, "apd": 4}


def _fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:.{_DECIMALS[key.split('_', 1)[1]]}f}"


def table_columns(
    rows: Sequence[tuple[str, Mapping[str, float | None]]],
    notes: Mapping[str, str] | None = None,
) -> tuple[tuple[str, str, str], ...]:
    """`COLUMNS`, plus each substitute column that a row or `notes` has a key for, after the column it follows."""
    present = {key for _, values in rows for key in values} | set(notes or ())
    columns = []
    for column in COLUMNS:
        columns.append(column)
        columns += [(key, setting, title) for key, setting, title, after in SUBSTITUTE_COLUMNS
                    if after == column[0] and key in present]
    return tuple(columns)


def format_markdown_table(
    rows: Sequence[tuple[str, Mapping[str, float | None]]],
    notes: Mapping[str, str] | None = None,
) -> str:
    """A Markdown table: one row per `(label, {column key: value})`, then a "comparable?" row from `notes`."""
    columns = table_columns(rows, notes)
    keys = [key for key, _, _ in columns]
    header = "| Method | " + " | ".join(f"{setting.split('-')[0]}: {title}" for _, setting, title in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(key, values.get(key)) for key in keys) + " |")
    if notes:
        lines.append("| *comparable with the paper?* | " + " | ".join(notes.get(key, "") for key in keys) + " |")
    return "\n".join(lines)


def write_csv_table(
    path: str | Path,
    rows: Sequence[tuple[str, Mapping[str, float | None]]],
    notes: Mapping[str, str] | None = None,
) -> Path:
    """The same table as CSV (`method` + one column per metric key; empty cells for n/a)."""
    path = Path(path)
    keys = [key for key, _, _ in table_columns(rows, notes)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", *keys])
        for label, values in rows:
            cells = []
            for key in keys:
                value = values.get(key)
                cells.append("" if value is None or (isinstance(value, float) and math.isnan(value)) else value)
            writer.writerow([label, *cells])
        if notes:
            writer.writerow(["comparable with the paper?", *(notes.get(key, "") for key in keys)])
    return path
