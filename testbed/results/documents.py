"""Writing results: one JSON document per run, plus a CSV of its headline figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def write(out_dir: Path, name: str, doc: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """Write ``name``.json (the whole document) and ``name``.csv (``rows``) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)
    if rows:
        with open(out_dir / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path
