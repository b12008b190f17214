"""Label radiology reports offline → a manifest CSV with four label sets for ``l2v-prepare-manifest``.

    l2v-label-reports --reports reports.csv --out labels.csv
    l2v-label-reports --reports reports/ --out labels.csv --image-template "images/{id}.dcm"
    l2v-label-reports --reports NLMCXR_reports.tgz --out openi_labels.csv \
        --image-template "NLMCXR_png/{id}.png"
    l2v-prepare-manifest --manifest labels.csv --out datalist.json --chexpert-findings

``--reports`` is a CSV with columns ``id,report`` (optionally ``image``), a folder of ``.txt``
files (id = file name), or the OpenI ``.tgz`` archive (one row per image). The labelers
(``l2v_monai.labelers``: ``context`` = medspaCy/ConText, ``window`` = token-window NegEx) give
label sets ``<labeler>_u0`` / ``<labeler>_u1`` (uncertain → 0 / 1); not-mentioned findings are 0
(``--not-mentioned blank`` writes them blank, i.e. missing). A report with no text stops the run
naming its id (``--allow-empty`` writes its labels blank instead). Report text is never printed.
The ``context`` labeler needs the ``[reports]`` extra (``pip install 'l2v-monai[reports]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2v_monai.data.datalist import DatalistSourceError
from l2v_monai.extras import MissingExtraError
from l2v_monai.labelers import LABELERS, label_sets
from l2v_monai.labelers.sources import (
    ReportSourceError,
    check_not_empty,
    manifest_rows,
    read_report_source,
    write_manifest,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=Path, required=True, help="CSV (id,report[,image]), folder of .txt, or OpenI .tgz")
    parser.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    parser.add_argument("--labelers", nargs="+", choices=sorted(LABELERS), default=list(LABELERS))
    parser.add_argument(
        "--image-template", default="{id}.png",
        help="image path for rows without an image column: {id} = image id (OpenI) or report id, {study} = report id",
    )
    parser.add_argument("--not-mentioned", choices=("0", "blank"), default="0", help="what a not-mentioned finding is")
    parser.add_argument("--allow-empty", action="store_true", help="write empty reports with blank labels")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        reports = read_report_source(args.reports)
        empty = check_not_empty(reports, args.reports, args.allow_empty)
    except (ReportSourceError, DatalistSourceError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    not_mentioned = float("nan") if args.not_mentioned == "blank" else 0.0
    try:
        labels, names = label_sets(
            [r.text for r in reports], args.labelers, progress=not args.no_progress, not_mentioned=not_mentioned
        )
    except MissingExtraError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    header, rows = manifest_rows(reports, labels, names, args.image_template, empty)
    written = write_manifest(args.out, header, rows)
    print(f"wrote {written}: {len(rows)} rows from {len(reports)} reports, label sets {', '.join(names)}")
    if empty:
        print(f"  {len(empty)} empty report(s) written with blank labels", file=sys.stderr)
    without_images = sum(1 for r in reports if not r.image_path and not r.image_ids)
    if without_images and any(r.image_ids for r in reports):
        print(f"  {without_images} report(s) list no image: one row each, image = the template with the report id",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
