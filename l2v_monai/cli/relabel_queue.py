"""Which training images should a radiologist hand-label? Export the queue, then import the labels back.

Export the top N training images of a datalist, ranked by the expected value of a hand label
(``l2v_monai.quality.relabel_queue``; the default score was chosen on development seeds, see docs/relabel.md):

    l2v-relabel-queue --datalist datalist.json --run bundle --n 200 --out relabel/round1

``--run`` is the bundle root a training run wrote (``models/checkpoint.pt``); its network and vote
are run once over the training images to get the model's probabilities and the vote's refined
labels. Give the keys the run was trained with that differ from ``configs/train.json``
(``--override image_size=64 dataset_dir=/data``). Without ``--run`` the scores that need only
the label sets are available (``--score disagreement`` or ``random``).

Writes under ``--out``: ``queue.csv`` (rank, id, study, score, the findings on which the sets
disagree, each set's label and the vote's refined label per finding), ``hand_labels.csv`` (the
blank template: id, rank, one column per finding) and ``contact_sheet.png`` (thumbnails captioned
with the rank and the disagreeing findings; no identifiers, no report text), plus
``queue.json`` (the settings and counts).

Fill ``hand_labels.csv`` with 1 (present), 0 (absent) or leave blank (not assessed), then import it:

    l2v-relabel-queue --datalist datalist.json --import relabel/round1/hand_labels.csv \\
        --out-datalist datalist_hand.json

The training items get a ``label`` field (the hand labels, null where none) that every strategy
trusts: the vote uses them as anchors and as the target, the other strategies as the target where
present. Train again on ``datalist_hand.json``. A bad template (an unknown id, a value other than
1/0/blank, a missing column) stops with an error naming each bad line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.quality.relabel_queue import (
    AGGREGATES,
    METHODS,
    QUEUE_AGGREGATE,
    QUEUE_METHOD,
    QueueEvidence,
    item_id,
    queue_scores,
    source_image,
    top_n,
    write_queue,
)
from l2v_monai.engine.run_outputs import evidence_from_run, parse_overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2v-relabel-queue", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", type=Path, required=True, help="the training datalist (items with 'labels', M × N)")
    parser.add_argument("--split", default="training", help="the split to rank or import into (default: training)")
    queue = parser.add_argument_group("export the queue")
    queue.add_argument("--run", type=Path, help="the bundle root of a trained run (models/checkpoint.pt)")
    queue.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                       help="config keys the run was trained with (JSON values or plain strings), e.g. image_size=64")
    queue.add_argument("--n", type=int, default=200, help="how many images to queue (default 200)")
    queue.add_argument("--score", default=QUEUE_METHOD, choices=sorted(METHODS) + ["random"],
                       help=f"the ranking score (default {QUEUE_METHOD}); 'random' draws a seeded sample (--seed), "
                            "which on our testbeds gained more test AUC per hand label than any ranking (docs/relabel.md)")
    queue.add_argument("--seed", type=int, default=0, help="the seed of --score random (default 0)")
    queue.add_argument("--aggregate", default=QUEUE_AGGREGATE, choices=AGGREGATES,
                       help=f"how an image's findings combine (default {QUEUE_AGGREGATE})")
    queue.add_argument("--out", type=Path, help="folder for queue.csv, hand_labels.csv, contact_sheet.png, queue.json")
    queue.add_argument("--no-sheet", action="store_true", help="skip the contact sheet")
    queue.add_argument("--id-key", help="the item key that names an image in the template (default dicom_id, else the image path)")
    back = parser.add_argument_group("import the filled template")
    back.add_argument("--import", dest="template", type=Path, help="a filled hand_labels.csv")
    back.add_argument("--out-datalist", type=Path, help="where the datalist with the hand labels is written (may be --datalist)")
    return parser


def _from_datalist(path: Path, split: str) -> dict[str, Any]:
    """The split's items and label sets, without a run."""
    from l2v_monai.data.datalist import read_split_label_sets

    items, labels, names, findings = read_split_label_sets(path, split)
    return {"items": items, "labels": labels, "label_sets": names, "findings": findings, "vote": None, "model": None}


def export(args: argparse.Namespace, command: str) -> dict[str, Any]:
    from l2v_monai.quality.hand_labels import hand_label_matrix

    if args.run is not None:
        if args.split != "training":
            raise ValueError("--run ranks the training split (what the run trained on)")
        found = evidence_from_run(args.run, args.datalist, parse_overrides(args.override))
    else:
        found = _from_datalist(args.datalist, args.split)
    items, findings = found["items"], found["findings"]
    hand = hand_label_matrix(items, len(findings))
    ev = QueueEvidence.from_labels(found["labels"], vote=found["vote"], model=found["model"],
                                   hand=hand if (~np.isnan(hand)).any() else None)
    if args.score == "random":
        # A seeded random sample of the images not yet fully hand-labelled; every queued image scores 0.
        eligible = np.flatnonzero(~(~np.isnan(hand)).all(1))
        order = np.random.default_rng(args.seed).permutation(eligible)[: args.n]
        scores = np.zeros(len(items))
    else:
        scores, _ = queue_scores(ev, args.score, args.aggregate)
        order = top_n(scores, args.n)
    # Ids as written in the datalist file (relative image paths), so that the template matches on import.
    raw = json.loads(args.datalist.read_text())[args.split]
    written = {str((args.datalist.parent / it["image"]).resolve()): item_id(it, i, args.id_key)
               for i, it in enumerate(raw) if isinstance(it.get("image"), str)}
    ids = [written.get(str(Path(source_image(it)).resolve()), item_id(it, i, args.id_key))
           if isinstance(source_image(it), str) else item_id(it, i, args.id_key) for i, it in enumerate(items)]
    paths = write_queue(args.out, items, order, findings, found["label_sets"], ev, scores, ids, sheet=not args.no_sheet)
    summary = {"command": command, "score": args.score, "aggregate": args.aggregate, "items": len(items), "queued": len(order),
               "with_disagreement": int((np.nanmax(ev.labels[order], 1) != np.nanmin(ev.labels[order], 1)).any(1).sum()),
               "already_hand_labelled": int((~np.isnan(hand)).any(1).sum()), "run": str(args.run) if args.run else None,
               "files": {k: str(v) for k, v in paths.items()}}
    (args.out / "queue.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command = "l2v-relabel-queue " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        if args.template is not None:
            if args.out_datalist is None:
                parser.error("--import needs --out-datalist (where the datalist with the hand labels goes)")
            from l2v_monai.quality.hand_labels import import_hand_labels

            result = import_hand_labels(args.datalist, args.template, args.out_datalist, args.split, args.id_key)
            print(f"{result['rows']} template rows with labels; {result['items_hand_labelled']} {args.split} items now carry "
                  f"hand labels ({result['entries']} entries, {result['entries_new']} new, {result['entries_changed']} changed); "
                  f"wrote {result['datalist']}")
            return 0
        if args.out is None:
            parser.error("give --out DIR to export the queue, or --import FILE --out-datalist PATH to read it back")
        summary = export(args, command)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(f"queued {summary['queued']} of {summary['items']} {args.split} images by {summary['score']} ({summary['aggregate']}); "
          f"{summary['with_disagreement']} of them have findings on which the sets disagree")
    print("wrote " + ", ".join(summary["files"].values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
