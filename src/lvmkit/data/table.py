"""Tables as users have them: ``data.name = "csv"``.

A CSV file with a header row: every column is a feature except ``data.label_column`` (the
labels; numbers are kept, strings are mapped to 0, 1, ... in sorted order and the mapping is
kept as the class names) and ``data.drop_columns`` (ignored, e.g. an identifier or a time
stamp). Feature columns must be numeric with no empty cells. The credit-card fraud table of
the ML lectures (``Time, V1..V28, Amount, Class``) reads with ``label_column = "Class"``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from lvmkit.core.config import DataConfig
from lvmkit.core.errors import DataError
from lvmkit.data import SOURCES, RawData


def _numeric(name: str, cells: list[str], origin: str) -> np.ndarray:
    try:
        return np.asarray(cells, dtype=np.float64)
    except ValueError:
        for row, cell in enumerate(cells, start=2):  # row 1 is the header
            try:
                float(cell)
            except ValueError:
                shown = "an empty cell" if not cell.strip() else f"{cell!r}"
                raise DataError(f"Column {name!r} of {origin!r} holds {shown} on line {row}, not a number; "
                                f"fix the file, or list the column in data.drop_columns (or name it data.label_column).") from None
        raise


def _labels(cells: list[str], origin: str, column: str) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels: numeric cells as they are, strings mapped to their sorted order."""
    try:
        values = np.asarray(cells, dtype=np.float64)
    except ValueError:
        if any(not c.strip() for c in cells):
            raise DataError(f"Label column {column!r} of {origin!r} has empty cells; give every row a label.") from None
        names = sorted(set(cells))
        index = {n: i for i, n in enumerate(names)}
        return np.asarray([index[c] for c in cells], dtype=np.int64), names
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise DataError(f"Label column {column!r} of {origin!r} holds non-integer numbers; labels must be integers or strings.")
    return values.astype(np.int64), None


@SOURCES.register("csv")
def read_table(cfg: DataConfig) -> RawData:
    if not cfg.path:
        raise DataError("data.name = 'csv' needs data.path, the CSV file to read; set it with --set data.path=FILE.")
    p = Path(cfg.path)
    if not p.is_file():
        raise DataError(f"Data file {str(p)!r} does not exist; check data.path.")
    origin = str(p)
    try:
        with open(p, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{origin!r} is not a readable CSV file ({err}); save it as UTF-8 text with a header row.") from None
    if len(rows) < 2:
        raise DataError(f"{origin!r} has no data rows under its header; a table needs a header row and one row per example.")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    widths = {len(r) for r in body if r}
    if widths != {len(header)}:
        bad = next(i for i, r in enumerate(body, start=2) if r and len(r) != len(header))
        raise DataError(f"Line {bad} of {origin!r} has {len(body[bad - 2])} cells but the header has {len(header)}; "
                        "every row needs one cell per column.")
    body = [r for r in body if r]
    for what, names in (("data.label_column", [cfg.label_column] if cfg.label_column else []),
                        ("data.drop_columns", cfg.drop_columns)):
        missing = [n for n in names if n not in header]
        if missing:
            raise DataError(f"{what} names {missing}, which {origin!r} does not have; its columns are {header}.")
    columns = list(zip(*body))
    features = [h for h in header if h != cfg.label_column and h not in cfg.drop_columns]
    if not features:
        raise DataError(f"{origin!r} has no feature columns left after the label and dropped columns; drop fewer columns.")
    x = np.stack([_numeric(h, list(columns[header.index(h)]), origin) for h in features], axis=1)
    y, class_names = None, None
    if cfg.label_column:
        y, class_names = _labels([c.strip() for c in columns[header.index(cfg.label_column)]], origin, cfg.label_column)
    return RawData(x, y, origin=origin, class_names=class_names,
                   info={"features": features, "label_column": cfg.label_column, "label_names": class_names})
