"""Hand labels back into the datalist: read a filled ``hand_labels.csv`` and give the items a ``label``.

The template (:func:`l2v_monai.quality.relabel_queue.write_template`) has an ``id`` column, an optional
``rank`` column and one column per finding. A radiologist fills each finding with ``1`` (present),
``0`` (absent) or leaves it blank (not assessed). :func:`read_hand_labels` checks every row and
raises one :class:`~l2v_monai.data.datalist.DatalistSourceError` that names the file and each bad
row's line: an unknown id, an id given twice, a value other than 1/0/blank, a missing finding
column or an unknown extra column.

:func:`import_hand_labels` writes the hand labels into the datalist's ``label`` field, the field the
datalist contract already reserves for hand labels (``l2v_monai.data.datalist``): ``N`` values,
``null`` = not hand-labelled. Every item of the split gets the key (``null`` everywhere when it has
no hand label), because the start-up check refuses a key that only some items of a split carry.
An item that already had a hand label keeps it where the new row is blank; a new value replaces
an old one. The strategies then treat these labels as trusted (``l2v_monai.strategies``).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.data.datalist import (
    DatalistSourceError,
    write_json_atomically,
    csv_line,
    exclusions_path,
    load_datalist_document,
    labels_to_json,
    parse_label_value,
    read_csv_table,
)
from l2v_monai.labels import stack_hand_labels
from l2v_monai.quality.relabel_queue import item_id

__all__ = ["OPTIONAL_COLUMNS", "hand_label_matrix", "import_hand_labels", "read_hand_labels"]

#: Template columns that are neither the id nor a finding, accepted and ignored.
OPTIONAL_COLUMNS = ("rank",)
#: Problems named per error; the rest are counted.
MAX_LISTED = 10


def read_hand_labels(path: str | Path, findings: Sequence[str], known_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """``{id: N values (1/0/NaN)}`` from a filled template; rows left wholly blank are skipped.

    Every problem in the file is collected first and raised as one ``DatalistSourceError`` naming the
    lines, so a radiologist fixes the sheet once.
    """
    path = Path(path)
    table = read_csv_table(path, required=["id", *findings], what="hand-label template")
    extra = [c for c in table.columns if c not in ("id", *findings, *OPTIONAL_COLUMNS)]
    if extra:
        raise DatalistSourceError(path, f"unknown column(s) {extra}: the template has 'id', 'rank' and the findings {list(findings)}", [1])
    known = set(known_ids)
    seen: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    out: dict[str, np.ndarray] = {}
    for index, record in enumerate(table.records()):
        line = csv_line(index)
        ident = record["id"]
        if not ident:
            problems.append((line, "the id is blank"))
            continue
        if ident not in known:
            problems.append((line, f"id {ident!r} is not an item of the datalist's split"))
            continue
        if ident in seen:
            problems.append((line, f"id {ident!r} is given twice (first on line {seen[ident]})"))
            continue
        seen[ident] = line
        values = np.full(len(findings), np.nan)
        for j, finding in enumerate(findings):
            try:
                values[j] = parse_label_value(record[finding], allowed=(1.0, 0.0))
            except ValueError as error:
                problems.append((line, f"id {ident!r}, column {finding!r}: {error}"))
        if not np.isnan(values).all():
            out[ident] = values
    if problems:
        shown = "; ".join(f"line {line}: {text}" for line, text in problems[:MAX_LISTED])
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise DatalistSourceError(path, f"{len(problems)} bad row(s): {shown}{more}", sorted({line for line, _ in problems}))
    return out


def hand_label_matrix(items: Sequence[Mapping[str, Any]], num_findings: int, key: str = "label") -> np.ndarray:
    """The items' hand labels as ``S × N`` (NaN where none): what the strategies and the queue read
    (:func:`l2v_monai.data.validation.stack_hand_labels`; a malformed one names the item)."""
    return stack_hand_labels(items, num_findings, key)


def import_hand_labels(
    datalist: str | Path,
    template: str | Path,
    out: str | Path,
    split: str = "training",
    id_key: str | None = None,
) -> dict[str, Any]:
    """Write ``datalist`` to ``out`` with the template's hand labels in the split's ``label`` field.

    Items are matched by the id the queue wrote (``dicom_id``, or ``id_key``, else the image path as
    written in the datalist). The exclusions list beside the datalist is copied beside ``out``.
    Returns counts: items hand-labelled now and in all, entries set, entries that changed value.
    """
    datalist, out = Path(datalist), Path(out)
    document = load_datalist_document(datalist)
    findings = list(document.get("findings", []))
    if not findings:
        raise DatalistSourceError(datalist, "names no 'findings'")
    items = document.get(split) or []
    if not items:
        raise DatalistSourceError(datalist, f"split {split!r} is missing or empty")
    ids = [item_id(item, i, id_key) for i, item in enumerate(items)]
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if repeated:
        raise DatalistSourceError(datalist, f"ids repeat in split {split!r} ({repeated[:3]}); pass another id key")
    given = read_hand_labels(template, findings, ids)
    before = hand_label_matrix(items, len(findings))
    after = before.copy()
    where = {ident: i for i, ident in enumerate(ids)}
    for ident, values in given.items():
        row = where[ident]
        after[row] = np.where(np.isnan(values), after[row], values)
    changed = int((~np.isnan(before) & ~np.isnan(after) & (before != after)).sum())
    document[split] = [{**item, "label": labels_to_json(after[i])} for i, item in enumerate(items)]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out, document)
    if exclusions_path(datalist).is_file() and exclusions_path(datalist).resolve() != exclusions_path(out).resolve():
        shutil.copyfile(exclusions_path(datalist), exclusions_path(out))
    return {
        "datalist": str(out),
        "split": split,
        "rows": len(given),
        "items_hand_labelled": int((~np.isnan(after)).any(1).sum()),
        "entries": int((~np.isnan(after)).sum()),
        "entries_new": int((np.isnan(before) & ~np.isnan(after)).sum()),
        "entries_changed": changed,
    }
