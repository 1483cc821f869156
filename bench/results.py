"""Where every benchmark writes its results, and how: ``bench/results/<name>.json``.

One place for the directory and the JSON layout, so results files of all
benchmarks read the same (values JSON cannot hold, such as datetimes, as text).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_json(out_dir: Path | str, name: str, result: Any, *, indent: int = 2,
               markdown: str | None = None) -> Path:
    """Write ``result`` to ``out_dir/name`` (creating the directory) and, when given, its
    Markdown rendering beside it (``name`` with ``.md``); returns the JSON file's path."""
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent, default=str) + "\n")
    if markdown is not None:
        path.with_suffix(".md").write_text(markdown)
    return path
