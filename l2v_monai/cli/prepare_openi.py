"""Build the OpenI hand-labelled test datalist and print its label counts per finding.

    l2v-prepare-openi --archive /data/openi/NLMCXR_reports.tgz \
        --image-root /data/NLMCXR_png --out data/openi/datalist.json

    # labels only (the PNGs are not at hand): image paths are recorded even though absent
    l2v-prepare-openi --archive ... --image-root NLMCXR_png --allow-missing-images --out ...

The counts are per report (positives, negatives, unlabelled), following the MeSH mapping and label
semantics documented in ``l2v_monai/data/openi.py``. Never prints report text.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2v_monai.data.datalist import write_datalist
from l2v_monai.data.openi import build_openi_datalist, openi_label_counts, read_openi_reports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, required=True, help="NLMCXR_reports.tgz")
    parser.add_argument("--image-root", type=Path, required=True, help="folder of <parentImage id>.png (NLMCXR_png)")
    parser.add_argument("--out", type=Path, help="datalist JSON to write (omit to only print the counts)")
    parser.add_argument("--allow-missing-images", action="store_true", help="labels-only datalist")
    parser.add_argument("--no-reports", action="store_true", help="leave the report text out")
    return parser


def format_counts(counts: dict[str, dict[str, int]]) -> list[str]:
    """A markdown table of positives / negatives / unlabelled reports per finding."""
    lines = ["| finding | positive | negative | unlabelled |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {c['positive']} | {c['negative']} | {c['unlabelled']} |" for name, c in counts.items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    reports = read_openi_reports(args.archive)
    print(f"{len(reports)} reports, {sum(len(r.image_ids) for r in reports)} images listed")
    print("\n".join(format_counts(openi_label_counts(reports))))
    if args.out is None:
        return 0
    datalist = build_openi_datalist(
        args.archive,
        args.image_root,
        allow_missing_images=args.allow_missing_images,
        include_reports=not args.no_reports,
        reports=reports,
    )
    written, exclusions = write_datalist(datalist, args.out)
    print(f"wrote {written}: {datalist.counts()['test']} test items")
    print(f"exclusions ({len(datalist.exclusions)} rows, listed in {exclusions}):")
    for line in datalist.exclusions.summary_lines():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
