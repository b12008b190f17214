"""Embed the report of every study in a datalist JSON once, into one cache file (offline, resumable).

    l2v-embed-reports --datalist data/mimic_datalist.json \\
        --output data/report_embeddings.pt --model dmis-lab/biobert-v1.1

The model is loaded from a local directory or the Hugging Face cache only; nothing is downloaded.
Re-running with the same model, pooling and length embeds only the studies not yet in the file.
Items without a study_id or a report are skipped and counted per split (no text is ever printed).
Needs the ``[reports]`` extra (transformers): ``pip install 'l2v-monai[reports]'``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from l2v_monai.extras import MissingExtraError
from l2v_monai.data.report_embedding import DEFAULT_MODEL, MAX_TOKENS, POOLINGS, ReportEncoder, embed_datalist


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", required=True, help="datalist JSON with study_id and report per item")
    parser.add_argument("--output", required=True, help="embedding cache file (.pt) to create or extend")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face model name or local directory")
    parser.add_argument("--pooling", default="mean", choices=sorted(POOLINGS))
    parser.add_argument("--max-length", type=int, default=MAX_TOKENS, help="token limit (capped at 512)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace a file made with other settings")
    parser.add_argument("--save-every-s", type=float, default=600.0, help="checkpoint the file this often")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        encoder = ReportEncoder(
            args.model, pooling=args.pooling, max_length=args.max_length, batch_size=args.batch_size, device=args.device
        )
    except MissingExtraError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run = embed_datalist(args.datalist, args.output, encoder, overwrite=args.overwrite, save_every_s=args.save_every_s)
    print(
        f"{run.studies} studies in {args.datalist}: embedded {run.embedded}, reused {run.reused} "
        f"(model {encoder.model_name}, dim {encoder.dim}, {encoder.pooling} pooling, max {encoder.max_length} tokens, "
        f"{encoder.device}) -> {run.path}"
    )
    if run.skipped:
        per_split = ", ".join(f"{split}: {n}" for split, n in run.skipped.items())
        print(f"skipped {sum(run.skipped.values())} items without a study_id or report ({per_split})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
