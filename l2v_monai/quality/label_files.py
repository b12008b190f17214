"""Per-image hand-label files into the datalist, through the hand-label import.

MONAI Label keeps a radiologist's label for image ``<id>`` as one file, ``labels/final/<id>.json``;
for this bundle the file holds ``{finding: 1, 0 or null}`` (null or a missing finding = not
assessed). :func:`merge_label_files` turns such files into one hand-label sheet (the template's
``id`` + finding columns) per split and reads it back with
:func:`l2v_monai.quality.hand_labels.import_hand_labels`, so the files meet the same checks and the
same merge rules as a filled ``hand_labels.csv``: an image's hand label lands in the datalist's
``label`` field, a new value replaces an old one, a blank keeps it.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from l2v_monai.data.datalist import DatalistSourceError, exclusions_path, load_datalist_document
from l2v_monai.quality.hand_labels import import_hand_labels
from l2v_monai.quality.relabel_queue import item_id

__all__ = ["HAND_LABEL_SPLITS", "merge_label_files", "read_label_file"]

#: The splits a hand label can land in: training (a trusted target) and validation (model selection).
HAND_LABEL_SPLITS = ("training", "validation")


def read_label_file(path: str | Path, findings: Sequence[str]) -> dict[str, str]:
    """``{finding: "1" | "0" | ""}`` from one ``{finding: 1, 0 or null}`` JSON file (a sheet row's cells).

    Raises ``ValueError`` naming the file for anything else: not a JSON object, an unknown finding,
    a value other than 1, 0 or null.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path.name}: not a readable JSON hand label ({type(error).__name__}: {error})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path.name}: a hand label is a JSON object {{finding: 1, 0 or null}}, got {type(document).__name__}")
    unknown = sorted(set(document) - set(findings))
    if unknown:
        raise ValueError(f"{path.name}: unknown finding(s) {unknown}; the bundle's findings are {list(findings)}")
    cells = {}
    for finding in findings:
        value = document.get(finding)
        # bool is an int in Python: true/false would read as 1/0 without this check.
        if value is None:
            cells[finding] = ""
        elif not isinstance(value, bool) and isinstance(value, (int, float)) and value in (0, 1):
            cells[finding] = str(int(value))
        else:
            raise ValueError(f"{path.name}: {finding!r} is {value!r}; a hand label is 1, 0 or null")
    return cells


def merge_label_files(
    datalist: str | Path,
    label_files: Mapping[str, str | Path],
    out: str | Path,
    id_key: str | None = None,
    splits: Sequence[str] = HAND_LABEL_SPLITS,
) -> dict[str, Any]:
    """Write ``datalist`` to ``out`` with the hand labels of ``label_files`` (``{image id: JSON file}``).

    Ids are matched as the relabeling queue names items (``dicom_id``, or ``id_key``). Each split of
    ``splits`` that holds some of the ids gets them through :func:`import_hand_labels`; ids in no
    split are counted, not imported (an image of the folder that the datalist does not list).
    ``out`` must sit in the datalist's folder: relative image paths resolve against it.
    Returns counts: ``files``, ``imported`` per split, ``unmatched`` and ``items_hand_labelled`` per split.
    """
    datalist, out = Path(datalist).resolve(), Path(out).resolve()
    if out.parent != datalist.parent:
        raise ValueError(f"{out} must be in the datalist's folder {datalist.parent}: its relative image paths resolve there")
    document = load_datalist_document(datalist)
    findings = list(document.get("findings", []))
    if not findings:
        raise DatalistSourceError(datalist, "names no 'findings'")
    rows = {ident: read_label_file(path, findings) for ident, path in label_files.items()}
    # Rebuilt from the source datalist every time: a label removed from the folder leaves the datalist too.
    shutil.copyfile(datalist, out)
    if exclusions_path(datalist).is_file():
        shutil.copyfile(exclusions_path(datalist), exclusions_path(out))
    counts: dict[str, Any] = {"files": len(rows), "imported": {}, "items_hand_labelled": {}}
    matched: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="hand-labels-") as tmp:
        for split in splits:
            ids = {item_id(item, i, id_key) for i, item in enumerate(document.get(split) or [])}
            mine = sorted(set(rows) & ids)
            if not mine:
                continue
            sheet = Path(tmp) / f"{split}.csv"
            with open(sheet, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=["id", *findings])
                writer.writeheader()
                writer.writerows({"id": ident, **rows[ident]} for ident in mine)
            result = import_hand_labels(out, sheet, out, split=split, id_key=id_key)
            counts["imported"][split] = len(mine)
            counts["items_hand_labelled"][split] = result["items_hand_labelled"]
            matched.update(mine)
    counts["unmatched"] = len(set(rows) - matched)
    return counts
