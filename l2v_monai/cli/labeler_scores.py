"""The report labelers against OpenI's manual MeSH labels (the paper's Table 4, left part).

    l2v-labeler-quality --archive NLMCXR_reports.tgz --out results/labeler_quality

Labels the FINDINGS + IMPRESSION of all 3,955 OpenI reports with every labeler
(``l2v_monai.labelers``), maps uncertain to 0 and to 1, and compares each of the four label sets
with the MeSH labels (``l2v_monai.data.openi.openi_labels``) for the findings with at least 20
MeSH positives: sensitivity, specificity, balanced accuracy. Writes ``<out>.md`` (table),
``<out>.json`` (all numbers) and ``<out>.png`` (heatmap). Only aggregate numbers are written.

OpenI is the development set of the labelers' rules; these numbers are not a held-out estimate.
Needs the ``[reports]`` extra (the context labeler) and ``[eval]`` (the heatmap).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from l2v_monai.extras import MissingExtraError, import_extra
from l2v_monai.labelers import LABELERS
from l2v_monai.labelers.against_truth import markdown_table, openi_quality, plot_heatmap


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, required=True, help="NLMCXR_reports.tgz")
    parser.add_argument("--out", type=Path, default=Path("results/labeler_quality"), help="output path without suffix")
    parser.add_argument("--labelers", nargs="+", choices=sorted(LABELERS), default=list(LABELERS))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # The heatmap comes last but its extra is checked first: labelling every report takes minutes.
        import_extra("matplotlib", "eval", "the labeler heatmap")
        table = openi_quality(args.archive, args.labelers, progress=True)
    except MissingExtraError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (args.out.with_suffix(s) for s in (".json", ".md", ".png"))
    json_path.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    better = "; ".join(
        f"{labeler}: {row['set']} {row['mean_balanced_accuracy']:.3f}" for labeler, row in table["better_mapping"].items()
    )
    summary = (
        f"{table['reports']} OpenI reports ({table['empty_reports']} with no FINDINGS/IMPRESSION text), "
        f"{len(table['findings'])} findings with >= {table['min_positives']} MeSH positives.\n\n"
        f"Mean balanced accuracy, better mapping per labeler: {better}.\n"
        f"Reports on which the {len(table['sets'])} label sets disagree on at least one finding: "
        f"{table['disagreement_fraction']:.1%}.\n"
    )
    md_path.write_text(
        "# Report labelers vs OpenI MeSH labels\n\n" + summary + "\n" + markdown_table(table) + "\n", encoding="utf-8"
    )
    plot_heatmap(table, png_path)
    print(summary, end="")
    print(f"wrote {md_path}, {json_path}, {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
