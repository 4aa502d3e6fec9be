"""The per-class summary of ``vectorize_raster``: which classes are present and their names (with the warnings
about them), the rows (polygons, hectares, share), the ``<stem>.summary.csv``/``.json`` files and the terminal
table."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.io.raster import ClassRaster
from geoseg.vector.write import WriteResult


@dataclass(frozen=True)
class ClassSummary:
    value: int
    name: str
    count: int
    area_ha: float
    share: float  # percent of the vectorized area


def summary_rows(stats: dict[int, list], names: dict[int, str]) -> list[ClassSummary]:
    total = sum(s[1] for s in stats.values())
    rows = []
    for v in sorted(stats):
        count, area = stats[v]
        rows.append(ClassSummary(v, names[v], int(count), area / 1e4, 100.0 * area / total if total else 0.0))
    return rows


def format_summary(rows: Sequence[ClassSummary]) -> str:
    lines = [f"{'class':>6}  {'name':<22}{'polygons':>10}{'area ha':>14}{'share':>8}"]
    for r in rows:
        lines.append(f"{r.value:>6}  {r.name:<22}{r.count:>10}{r.area_ha:>14.2f}{r.share:>7.1f}%")
    total_n = sum(r.count for r in rows)
    total_a = sum(r.area_ha for r in rows)
    lines.append(f"{'':>6}  {'total':<22}{total_n:>10}{total_a:>14.2f}{100.0 if rows else 0.0:>7.1f}%")
    return "\n".join(lines)


def summary_paths(output: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(output)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(stem + ".summary.csv"), out.with_name(stem + ".summary.json")


def present_classes(info: ClassRaster, present: np.ndarray, selected: tuple[int, ...] | None,
                    messages: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """The class values vectorized (``present`` in the blocks, within ``selected``) and every one's name
    (``class_<value>`` where the raster has none); warnings about absent or unnamed classes go to ``messages``."""
    band = info.band
    if selected is not None:
        absent = sorted(set(selected) - set(present.tolist()))
        if absent:
            messages.append(
                f"--classes {', '.join(map(str, absent))}: no such value in {info.path} (nodata excluded; values "
                f"present: {', '.join(map(str, present[:20].tolist()))}{' ...' if present.size > 20 else ''})"
            )
        present = present[np.isin(present, selected)]
    names = dict(info.class_names)
    missing = [int(v) for v in present if int(v) not in names]
    if missing:
        for v in missing:
            names[v] = f"class_{v}"
        shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        hint = (f"; {len(present)} distinct values: is this a class raster at all (not, say, band {band} of an "
                "image)?" if len(present) > 255 else "")
        messages.append(
            f"class value(s) {shown} have no name in {info.path} (no CLASS_<value> band tag); named "
            f"class_<value>{hint}"
        )
    return present, names


def class_stats(present: np.ndarray, parts: Iterable[WriteResult]) -> dict[int, list]:
    """Polygons and area (m²) per present class value, summed over the writes."""
    stats: dict[int, list] = {int(v): [0, 0.0] for v in present}
    for part in parts:
        for v, (cnt, area) in part.stats.items():
            stats[v][0] += cnt
            stats[v][1] += area
    return stats


def write_summary(csv_path: str | os.PathLike, json_path: str | os.PathLike, rows: Sequence[ClassSummary],
                  record: dict) -> None:
    """The summary table as CSV and the run's record (with the rows) as JSON."""
    with open(csv_path, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["class", "name", "count", "area_ha", "share_percent"])
        for r in rows:
            wr.writerow([r.value, r.name, r.count, f"{r.area_ha:.4f}", f"{r.share:.3f}"])
    Path(json_path).write_text(json.dumps(record, indent=2) + "\n")
