"""The datalist JSON shared by every chest X-ray source, its errors and its exclusions list.

A datalist is one MONAI decathlon-style JSON file::

    {"findings": [N names], "label_sets": [M names],
     "training": [items], "validation": [items], "test": [items]}

with items ``{"image": path, "labels": M × N, ...}`` (``null`` = no label) and, for hand-labelled
sets, ``"label": N``. Image paths under the datalist's folder are written relative to it, so that a
prepared dataset folder can be moved; MONAI's ``load_decathlon_datalist`` joins them back.

Bad rows raise ``DatalistSourceError`` naming the file and its line numbers. Rows left out on
purpose (a lateral view, a study with labels but no image) go to an ``ExclusionLog``: every left-out
row has a reason, the counts are printed by the scripts and written next to the datalist as
``<name>.exclusions.json``. Nothing is dropped silently.

Messages name files, line numbers and dataset ids (study_id, dicom_id); never report text.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

SPLITS: tuple[str, ...] = ("training", "validation", "test")
# Spellings of split names found in source files → datalist keys (MIMIC writes "train"/"validate").
SPLIT_ALIASES: dict[str, str] = {
    "train": "training",
    "training": "training",
    "validate": "validation",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
    "testing": "test",
}
# Raw label values accepted in CheXpert-style label files: positive, negative, uncertain.
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
# A CSV's first line is its header, so data row ``i`` (0-based) sits on line ``i + 2``.
CSV_HEADER_LINES = 1
MAX_LISTED_ROWS = 10


def csv_line(row_index: int) -> int:
    """1-based line number in the CSV file of 0-based data row ``row_index`` (after the header)."""
    return row_index + CSV_HEADER_LINES + 1


def _rows_text(lines: Sequence[int]) -> str:
    shown = ", ".join(str(line) for line in list(lines)[:MAX_LISTED_ROWS])
    more = f" and {len(lines) - MAX_LISTED_ROWS} more" if len(lines) > MAX_LISTED_ROWS else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


class DatalistSourceError(ValueError):
    """A source file (label CSV, manifest, XML archive) holds bad data; names the file and lines."""

    def __init__(self, path: str | Path, message: str, lines: Sequence[int] = ()) -> None:
        self.path = str(path)
        self.lines = tuple(lines)
        where = f"{self.path}, {_rows_text(self.lines)}" if self.lines else self.path
        super().__init__(f"{where}: {message}")


class EmptySplitError(ValueError):
    """A split that must hold items is empty."""


@dataclass(frozen=True)
class Exclusion:
    """One row left out of the datalist on purpose, and why."""

    reason: str
    source: str
    line: int | None
    ident: str

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "source": self.source, "line": self.line, "id": self.ident}


@dataclass
class ExclusionLog:
    """Every left-out row with its reason; ``counts()`` summarises them for printing."""

    entries: list[Exclusion] = field(default_factory=list)

    def add(self, reason: str, source: str | Path, line: int | None, ident: str) -> None:
        self.entries.append(Exclusion(reason, str(source), line, str(ident)))

    def counts(self) -> dict[str, int]:
        """Number of exclusions per reason, most frequent first."""
        return dict(Counter(entry.reason for entry in self.entries).most_common())

    def __len__(self) -> int:
        return len(self.entries)

    def summary_lines(self) -> list[str]:
        """Human-readable lines ``<count>  <reason>`` (or one line saying nothing was excluded)."""
        if not self.entries:
            return ["no rows excluded"]
        return [f"{count:>8}  {reason}" for reason, count in self.counts().items()]

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts(), "total": len(self.entries), "excluded": [e.to_json() for e in self.entries]}


@dataclass
class Datalist:
    """An in-memory datalist: finding and label-set names, items per split, and the exclusions."""

    findings: list[str]
    label_sets: list[str]
    splits: dict[str, list[dict[str, Any]]]
    exclusions: ExclusionLog = field(default_factory=ExclusionLog)

    def counts(self) -> dict[str, int]:
        """Items per split, in ``SPLITS`` order."""
        return {name: len(self.splits.get(name, [])) for name in SPLITS}

    def to_json(self, base_dir: str | Path | None = None) -> dict[str, Any]:
        """The JSON document; image paths under ``base_dir`` become relative to it."""
        document: dict[str, Any] = {"findings": list(self.findings), "label_sets": list(self.label_sets)}
        for name in SPLITS:
            document[name] = [_relative_item(item, base_dir) for item in self.splits.get(name, [])]
        return document


def _relative_item(item: Mapping[str, Any], base_dir: str | Path | None) -> dict[str, Any]:
    out = dict(item)
    if base_dir is not None and isinstance(out.get("image"), str):
        image = Path(out["image"]).absolute()
        base = Path(base_dir).absolute()
        # Only paths inside the datalist folder become relative: "../" chains break when it moves.
        if image.is_relative_to(base):
            out["image"] = image.relative_to(base).as_posix()
    return out


def exclusions_path(datalist_path: str | Path) -> Path:
    """Where the exclusions list of a datalist is written: ``<stem>.exclusions.json`` beside it."""
    path = Path(datalist_path)
    return path.with_name(f"{path.stem}.exclusions.json")


def write_datalist(datalist: Datalist, path: str | Path, relative_paths: bool = True) -> tuple[Path, Path]:
    """Write the datalist JSON and its exclusions list (always, even when empty); return both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, datalist.to_json(path.parent if relative_paths else None))
    excluded = exclusions_path(path)
    write_json_atomically(excluded, datalist.exclusions.to_json())
    return path, excluded


def _dumps(document: Any, depth: int = 0) -> str:
    """JSON with one item per line inside each list of items: readable, diffable and compact.

    (``indent=1`` would put every label value of a 4 × 14 matrix on its own line: twice the size.)
    """
    if depth < 2 and isinstance(document, dict):
        pad = " " * (depth + 1)
        body = ",\n".join(f"{pad}{json.dumps(key)}: {_dumps(value, depth + 1)}" for key, value in document.items())
        return "{\n" + body + "\n" + " " * depth + "}"
    if depth >= 1 and isinstance(document, list) and document and isinstance(document[0], dict):
        pad = " " * (depth + 1)
        body = ",\n".join(pad + json.dumps(item, allow_nan=False) for item in document)
        return "[\n" + body + "\n" + " " * depth + "]"
    return json.dumps(document, allow_nan=False)


def write_json_atomically(path: Path, document: Any) -> None:
    """Write ``document`` as strict JSON (no NaN) through a temporary file, so a kill never leaves half a file."""
    # allow_nan=False (in _dumps): a NaN that escaped the null conversion would write invalid JSON.
    try:
        text = _dumps(document)
    except ValueError as error:
        raise ValueError(f"{path}: cannot write valid JSON ({error}); labels must use None, not NaN") from None
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text + "\n", encoding="utf-8")
    os.replace(temporary, path)


def labels_to_json(values: Iterable[Any]) -> list[Any]:
    """Nested label values with NaN → ``None`` (JSON ``null``), floats kept as floats."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, (list, tuple)) or hasattr(value, "__array__") and getattr(value, "ndim", 0) > 0:
            out.append(labels_to_json(value))
        elif value is None or math.isnan(float(value)):
            out.append(None)
        else:
            out.append(float(value))
    return out


def parse_label_value(raw: Any, allowed: Iterable[float] = (POSITIVE, NEGATIVE, UNCERTAIN)) -> float:
    """One raw label cell → float (NaN for blank); raises ``ValueError`` describing the bad value.

    ``raw`` is a CSV cell read as text (``"1.0"``, ``"-1"``, ``""``) or a number.
    """
    if raw is None:
        return math.nan
    if isinstance(raw, float) and math.isnan(raw):
        return math.nan
    text = str(raw).strip()
    if text == "":
        return math.nan
    allowed = tuple(allowed)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value not in allowed:
        accepted = ", ".join(f"{v:g}" for v in allowed)
        raise ValueError(f"label value {text!r} is not one of {accepted} or blank")
    return value


def normalise_split(raw: str) -> str | None:
    """A source file's split name → datalist key, or ``None`` if it is not a known split name."""
    return SPLIT_ALIASES.get(str(raw).strip().lower())


def require_splits(
    splits: Mapping[str, Sequence[Any]], required: Iterable[str] = SPLITS, source: str | Path = "datalist"
) -> None:
    """Raise ``EmptySplitError`` naming each required split that holds no item."""
    empty = [name for name in required if not splits.get(name)]
    if empty:
        raise EmptySplitError(
            f"{source}: split(s) {', '.join(empty)} would be empty after filtering "
            "(pass allow_empty_splits / --allow-empty-splits to accept this)"
        )


def duplicated_lines(values: Sequence[Any]) -> dict[Any, list[int]]:
    """Values that occur more than once in a column → the CSV line numbers where they occur."""
    lines: dict[Any, list[int]] = {}
    for index, value in enumerate(values):
        lines.setdefault(value, []).append(csv_line(index))
    return {value: where for value, where in lines.items() if len(where) > 1}


def raise_on_duplicates(path: str | Path, column: str, values: Sequence[Any]) -> None:
    """Raise ``DatalistSourceError`` naming the lines of the first few duplicated ``column`` values."""
    duplicates = duplicated_lines(values)
    if not duplicates:
        return
    shown = list(duplicates.items())[:3]
    detail = "; ".join(f"{column} {value} on lines {', '.join(map(str, where))}" for value, where in shown)
    more = f" ({len(duplicates)} duplicated values in all)" if len(duplicates) > len(shown) else ""
    all_lines = sorted(line for where in duplicates.values() for line in where)
    raise DatalistSourceError(path, f"duplicated {column}: {detail}{more}", all_lines)


# Byte-order marks of encodings other than UTF-8, checked before decoding: a UTF-16 file
# "decodes" as UTF-8 into garbage headers when it happens to hold only ASCII-range characters.
_FOREIGN_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)
# Delimiters that spreadsheet programs write instead of commas (a European locale's Excel writes ';').
_OTHER_DELIMITERS: dict[str, str] = {";": "semicolon ';'", "\t": "tab", "|": "pipe '|'"}
SAVE_AS = "save it as 'CSV UTF-8 (comma delimited)'"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; ``.gz`` files are decompressed."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as stream:
            return stream.read()
    return path.read_bytes()


def _guess_encoding(data: bytes) -> str:
    """A short name for what a non-UTF-8 text file probably is, for error messages."""
    try:
        data.decode("cp1252")
    except UnicodeDecodeError:
        return "an unknown 8-bit encoding"
    return "Windows-1252 (cp1252) / Latin-1, as Excel and Windows tools write"


def decode_utf8_text(path: str | Path, data: bytes, fix: str = SAVE_AS) -> str:
    """UTF-8 text (a leading BOM dropped) from a text file's bytes; raise ``DatalistSourceError`` naming the encoding.

    A file in another encoding is refused rather than guessed: a mis-decoded path or finding name
    would fail later (or worse, match the wrong column). The message names the line and column of
    the first byte that is not UTF-8 and what the file looks like.
    """
    for bom, name in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise DatalistSourceError(path, f"is encoded as {name}, not UTF-8; {fix}", [1])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DatalistSourceError(
            path,
            f"is not UTF-8: byte 0x{data[error.start]:02X} at column {column} cannot be decoded; the file looks like "
            f"{_guess_encoding(data)}; {fix}",
            [line],
        ) from None


def _check_delimiter(path: Path, header_line: str) -> None:
    """A header that holds no comma but another delimiter means the file is not comma-separated."""
    if "," in header_line:
        return
    found = [name for char, name in _OTHER_DELIMITERS.items() if char in header_line]
    if found:
        raise DatalistSourceError(
            path, f"is not comma-separated: its header uses {found[0]} as the delimiter ({header_line[:80]!r}); {SAVE_AS}",
            [1],
        )


class CsvTable:
    """A CSV file's cells as stripped text, column by column (a blank cell is ``""``).

    ``table["image"]`` is that column's cells in file order (the list itself: do not modify it),
    ``len(table)`` the number of data rows, ``table.columns`` the header, ``table.records()`` one
    ``{column: cell}`` dict per row. Data row ``i`` sits on file line ``csv_line(i)``.
    """

    def __init__(self, columns: Sequence[str], cells: Mapping[str, list[str]], rows: int) -> None:
        self.columns = list(columns)
        self._cells = dict(cells)
        self._rows = rows

    def __len__(self) -> int:
        return self._rows

    def __contains__(self, column: object) -> bool:
        return column in self._cells

    def __getitem__(self, column: str) -> list[str]:
        if column not in self._cells:
            raise KeyError(f"no column {column!r}; the header has {self.columns}")
        return self._cells[column]

    def records(self) -> list[dict[str, str]]:
        """One ``{column: cell}`` dict per data row, in file order."""
        return [dict(zip(self.columns, row)) for row in zip(*(self._cells[c] for c in self.columns))]

    def renamed(self, names: Mapping[str, str]) -> CsvTable:
        """A table whose columns ``old`` are called ``names[old]`` (the cells are shared, not copied)."""
        columns = [names.get(column, column) for column in self.columns]
        repeated = sorted({column for column in columns if columns.count(column) > 1})
        if repeated:
            raise ValueError(f"renaming columns {dict(names)} repeats {repeated}; the header has {self.columns}")
        return CsvTable(columns, {names.get(c, c): cells for c, cells in self._cells.items()}, self._rows)


def _csv_cells(path: Path, text: str) -> tuple[list[str], list[list[str]]]:
    """The stripped header and the data rows as read; blank lines are skipped, short rows padded with ``""``."""
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    header: list[str] = []
    rows: list[list[str]] = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if not header:
                header = [name.strip() for name in row]
                width = len(header)
                continue
            if len(row) > width:
                raise DatalistSourceError(
                    path, f"cannot be read as a CSV file: {len(row)} cells where the header has {width}", [reader.line_num]
                )
            rows.append(row if len(row) == width else row + [""] * (width - len(row)))
    except csv.Error as error:
        raise DatalistSourceError(path, f"cannot be read as a CSV file (csv.Error: {error})", [reader.line_num]) from None
    return header, rows


def read_csv_table(path: str | Path, required: Iterable[str] = (), what: str = "CSV file") -> CsvTable:
    """Read a CSV (or ``.csv.gz``) with every cell as stripped text (blank = ``""``); check its header.

    The file must be UTF-8 (a byte-order mark is accepted) and comma-separated. Cells arrive exactly
    as written: ``""`` is the only blank, so a stray ``NA`` or ``n/a`` is reported as a bad value
    instead of silently becoming missing. Raises ``FileNotFoundError`` naming ``what`` and the path,
    and ``DatalistSourceError`` for another encoding or delimiter (naming what was found), an
    unreadable file, a row with more cells than the header, repeated column names or missing
    ``required`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = _read_bytes(path)
    except (OSError, EOFError) as error:
        raise DatalistSourceError(path, f"cannot be read ({type(error).__name__}: {error})") from None
    text = decode_utf8_text(path, data)
    _check_delimiter(path, text.split("\n", 1)[0].rstrip("\r"))
    header, rows = _csv_cells(path, text)
    if not header:
        raise DatalistSourceError(path, "is empty (no header line)")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DatalistSourceError(path, f"column name(s) repeated in the header: {repeated}", [1])
    missing = [name for name in required if name not in header]
    if missing:
        raise DatalistSourceError(path, f"missing required column(s) {missing}; the header has {header}", [1])
    # Stripped column by column: a third faster than cell by cell in each row on MIMIC-sized files.
    columns = [list(map(str.strip, cells)) for cells in zip(*rows)] if rows else [[] for _ in header]
    return CsvTable(header, dict(zip(header, columns)), len(rows))


def load_datalist_document(path: str | Path) -> dict[str, Any]:
    """The datalist file's JSON as written; a missing file or invalid JSON is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist {path} not found: build it with scripts/prepare_mimic.py or scripts/prepare_manifest.py")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatalistSourceError(path, f"not valid JSON ({err})") from err


def read_datalist(
    path: str | Path,
    label_sets: Sequence[str] | None = None,
    splits: Sequence[str] = SPLITS,
    require: Sequence[str] = (),
    findings: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Read a datalist JSON for training or evaluation.

    Relative image paths are resolved against the datalist's folder; ``label_sets`` selects (and
    orders) label sets by name, so a config can train on a subset such as ``["che_u1", "neg_u1"]``
    without rewriting the file. Returns ``{"findings", "label_sets", <split>: items}``. A split
    named in ``require`` that is missing or empty is an error naming the file, and so are
    ``findings`` that differ from the datalist's (the network's outputs follow the config).
    """
    path = Path(path)
    document = load_datalist_document(path)
    available = list(document.get("label_sets", []))
    chosen = available if label_sets is None else list(label_sets)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise DatalistSourceError(path, f"label sets {unknown} are not in this datalist (it has {available})")
    if findings is not None and list(findings) != list(document.get("findings", [])):
        raise DatalistSourceError(
            path, f"its findings {document.get('findings')} differ from the configured findings {list(findings)}"
        )
    index = [available.index(name) for name in chosen]
    base = path.parent
    out: dict[str, Any] = {"findings": list(document.get("findings", [])), "label_sets": chosen}
    for split in splits:
        items = []
        for item in document.get(split, []):
            item = dict(item)
            if isinstance(item.get("image"), str) and not Path(item["image"]).is_absolute():
                item["image"] = str(base / item["image"])
            if "labels" in item and index != list(range(len(available))):
                item["labels"] = [item["labels"][i] for i in index]
            items.append(item)
        if split in require and not items:
            raise EmptySplitError(f"{path}: split {split!r} is missing or empty")
        out[split] = items
    return out


def read_split_label_sets(
    path: str | Path, split: str = "training", label_sets: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], np.ndarray, list[str], list[str]]:
    """``(items, labels S × M × N, set names, findings)`` of one split, for the tools that compare label sets.

    The split must exist and hold items, and the datalist must name its ``label_sets`` and
    ``findings``; a bad ``labels`` value names the item. Every error names the file.
    """
    from l2v_monai.labels import LabelValueError, stack_labels  # labels needs torch; datalist does not

    data = read_datalist(path, label_sets=label_sets, splits=(split,), require=(split,))
    names, findings = list(data["label_sets"]), list(data["findings"])
    if not names or not findings:
        raise DatalistSourceError(path, "names no 'label_sets' or no 'findings': comparing label sets per finding needs both")
    items = data[split]
    try:
        labels = stack_labels(items, "labels", (len(names), len(findings)), [names, findings], split)
    except LabelValueError as error:
        raise DatalistSourceError(path, str(error)) from None
    return items, labels, names, findings


def attach_label_sets(items: Sequence[Mapping[str, Any]], source: Mapping[str, Any], key: str = "labels") -> list[dict[str, Any]]:
    """Give hand-labelled ``items`` the noisy label sets that ``source`` (a read datalist) holds for the
    same images, so evaluation can score each training label set against the hand labels.

    Images are matched by resolved path across all of ``source``'s splits; an item whose image has
    no label sets there is an error naming it (a partial join would silently bias the comparison).
    """
    by_image: dict[str, Any] = {}
    for split in SPLITS:
        for item in source.get(split, []):
            if key in item:
                by_image[str(Path(item["image"]).resolve())] = item[key]
    out, missing = [], []
    for item in items:
        found = by_image.get(str(Path(item["image"]).resolve()))
        if found is None:
            missing.append(item["image"])
        out.append({**item, key: found})
    if missing:
        raise ValueError(
            f"{len(missing)} hand-labelled images have no label sets in the training datalist (first: {missing[:3]}); "
            "set label_set_auc to false or evaluate on images the datalist covers"
        )
    return out
