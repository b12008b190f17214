"""Build a MIMIC-CXR datalist JSON (several noisy label sets) or a hand-labelled MIMIC test datalist.

    # the official files: four label sets neg_u0 neg_u1 che_u0 che_u1, frontal views, official split
    l2v-prepare-mimic labelers --root /data/mimic-cxr-jpg --reports-root /data/mimic-cxr \
        --out data/mimic/datalist.json

    # a hand-labelled test CSV (dicom_id or image column + 14 finding columns with 0/1/blank)
    l2v-prepare-mimic hand-labels --csv mimic_1k.csv --root /data/mimic-cxr-jpg \
        --out data/mimic/hand_labelled.json

Prints the item count per split and the exclusions per reason, and writes the exclusions list next
to the datalist (``<name>.exclusions.json``). Never prints report text.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from l2v_monai.data.datalist import Datalist, write_datalist
from l2v_monai.data.mimic import (
    DEFAULT_LABEL_SETS,
    FRONTAL_VIEWS,
    IMAGE_FORMATS,
    MimicFiles,
    build_hand_labelled_datalist,
    build_mimic_datalist,
)

BLANK_POLICIES = {"0": 0.0, "missing": math.nan}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    labelers = commands.add_parser("labelers", help="datalist from the official CheXpert/NegBio label files")
    labelers.add_argument("--root", type=Path, required=True, help="folder holding the CSVs and files/ (images)")
    labelers.add_argument(
        "--reports-root", type=Path, help="folder holding files/ with the .txt reports (default: --root)"
    )
    for name in ("chexpert", "negbio", "metadata", "split"):
        labelers.add_argument(
            f"--{name}-csv", type=Path, help=f"the {name} CSV, if not under --root with its standard name"
        )
    labelers.add_argument("--label-sets", nargs="+", default=list(DEFAULT_LABEL_SETS), help="<neg|che>_u<0|1|missing>")
    labelers.add_argument("--views", nargs="+", default=list(FRONTAL_VIEWS), help="ViewPosition values to keep")
    labelers.add_argument("--all-views", action="store_true", help="keep every view")
    labelers.add_argument("--blank", choices=sorted(BLANK_POLICIES), default="0", help="what a blank label becomes")
    labelers.add_argument("--image-format", choices=IMAGE_FORMATS, default="jpg")
    labelers.add_argument("--no-reports", action="store_true", help="do not read reports")
    labelers.add_argument("--no-image-check", action="store_true", help="do not check that image files exist")
    labelers.add_argument(
        "--missing-images", choices=("error", "exclude"), default="error", help="a listed image whose file is absent"
    )
    labelers.add_argument("--strict", action="store_true", help="a labelled study without images is an error")
    labelers.add_argument("--allow-empty-splits", action="store_true")
    labelers.add_argument("--out", type=Path, required=True, help="datalist JSON to write")

    hand = commands.add_parser("hand-labels", help="test datalist from a hand-labelled CSV")
    hand.add_argument("--csv", type=Path, required=True)
    hand.add_argument("--root", type=Path, help="folder holding files/ (needed for a dicom_id column)")
    hand.add_argument("--metadata-csv", type=Path, help="default: the standard metadata file under --root")
    hand.add_argument("--image-format", choices=IMAGE_FORMATS, default="jpg")
    hand.add_argument("--no-image-check", action="store_true")
    hand.add_argument("--out", type=Path, required=True)
    return parser


def _default_metadata(root: Path | None) -> Path | None:
    if root is None:
        return None
    for name in ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz"):
        if (root / name).is_file():
            return root / name
    return None


def build(args: argparse.Namespace) -> Datalist:
    """Run the chosen builder from parsed arguments."""
    if args.command == "hand-labels":
        return build_hand_labelled_datalist(
            args.csv,
            image_root=args.root,
            metadata_csv=args.metadata_csv or _default_metadata(args.root),
            image_format=args.image_format,
            check_images=not args.no_image_check,
        )
    files = MimicFiles.find(
        args.root,
        report_root=args.reports_root,
        chexpert_csv=args.chexpert_csv,
        negbio_csv=args.negbio_csv,
        metadata_csv=args.metadata_csv,
        split_csv=args.split_csv,
    )
    return build_mimic_datalist(
        files,
        label_sets=args.label_sets,
        views=None if args.all_views else args.views,
        blank=BLANK_POLICIES[args.blank],
        include_reports=not args.no_reports,
        image_format=args.image_format,
        check_images=not args.no_image_check,
        missing_images=args.missing_images,
        strict=args.strict,
        allow_empty_splits=args.allow_empty_splits,
    )


def report(datalist: Datalist, written: Path, exclusions: Path) -> None:
    """Print counts per split and exclusions per reason (no report text, no patient data)."""
    print(f"wrote {written}")
    print(f"  label sets: {', '.join(datalist.label_sets) or '(none: clean labels only)'}")
    for split, count in datalist.counts().items():
        print(f"  {split:<10} {count:>8} items")
    print(f"exclusions ({len(datalist.exclusions)} rows, listed in {exclusions}):")
    for line in datalist.exclusions.summary_lines():
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    datalist = build(args)
    written, exclusions = write_datalist(datalist, args.out)
    report(datalist, written, exclusions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
