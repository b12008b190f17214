"""Build a datalist JSON from a hospital's own manifest CSV (see ``l2v_monai/data/manifest.py``).

    l2v-prepare-manifest --manifest site/manifest.csv --out site/datalist.json \
        --uncertain missing

Columns: ``image``, optional ``report`` (text, or a path ending in .txt), optional ``split``,
optional ``study_id``, and label columns ``<set>/<finding>`` (``reader1/Atelectasis``), with a
``label/<finding>`` group for clean hand labels. Prints the item count per split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2v_monai.data.datalist import write_datalist
from l2v_monai.data.manifest import UNCERTAIN_POLICIES, build_manifest_datalist
from l2v_monai.findings import CHEXPERT_FINDINGS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="datalist JSON to write")
    parser.add_argument(
        "--findings", nargs="+", help="expected finding names, in output order (default: inferred from the columns)"
    )
    parser.add_argument(
        "--chexpert-findings", action="store_true", help="expect exactly the 14 CheXpert findings, in their order"
    )
    parser.add_argument("--uncertain", choices=sorted(UNCERTAIN_POLICIES), default="missing", help="what -1 becomes")
    parser.add_argument("--default-split", default="training", help="split of every row when there is no split column")
    parser.add_argument("--no-image-check", action="store_true")
    parser.add_argument("--allow-empty-splits", action="store_true")
    parser.add_argument("--allow-missing-reports", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    findings = list(CHEXPERT_FINDINGS) if args.chexpert_findings else args.findings
    datalist = build_manifest_datalist(
        args.manifest,
        findings=findings,
        uncertain=args.uncertain,
        default_split=args.default_split,
        check_images=not args.no_image_check,
        allow_empty_splits=args.allow_empty_splits,
        allow_missing_reports=args.allow_missing_reports,
    )
    written, _ = write_datalist(datalist, args.out)
    print(f"wrote {written}")
    print(f"  findings ({len(datalist.findings)}): {', '.join(datalist.findings)}")
    print(f"  label sets ({len(datalist.label_sets)}): {', '.join(datalist.label_sets) or '(none)'}")
    for split, count in datalist.counts().items():
        print(f"  {split:<10} {count:>8} items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
