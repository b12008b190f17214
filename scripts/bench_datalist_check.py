"""Seconds for the start-up datalist check at MIMIC-CXR scale.

Builds an in-memory datalist shaped like MIMIC-CXR-JPG's frontal images (368,960 training and
2,991 validation items by default, 4 label sets × 14 findings, values 1/0/null, the keys that
``scripts/prepare_mimic.py`` writes), then times ``check_datalist`` as ``train.json`` calls it and
``stack_labels`` as ``attach_targets`` calls it. No image is involved: the check reads none.

    python scripts/bench_datalist_check.py
"""

from __future__ import annotations

import argparse
import random
import time

from l2v_monai.data.validation import check_datalist
from l2v_monai.labels import stack_labels
from l2v_monai.findings import CHEXPERT_FINDINGS

LABEL_SETS = ["neg_u0", "neg_u1", "che_u0", "che_u1"]
VALUES = (1.0, 0.0, None, None)


def _item(rng: random.Random, index: int) -> dict:
    return {
        "image": f"/data/mimic-cxr-jpg/files/p1{index % 10}/p{index}/s{index}/{index:08d}.jpg",
        "study_id": str(index),
        "subject_id": str(index),
        "dicom_id": f"{index:08d}",
        "view": "PA",
        "labels": [[rng.choice(VALUES) for _ in CHEXPERT_FINDINGS] for _ in LABEL_SETS],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training", type=int, default=368_960)
    parser.add_argument("--validation", type=int, default=2_991)
    args = parser.parse_args()
    rng = random.Random(0)
    data = {
        "training": [_item(rng, i) for i in range(args.training)],
        "validation": [_item(rng, 10**8 + i) for i in range(args.validation)],
    }
    start = time.perf_counter()
    check_datalist(data, CHEXPERT_FINDINGS, LABEL_SETS)
    checked = time.perf_counter() - start
    start = time.perf_counter()
    stack_labels(data["training"], "labels", (len(LABEL_SETS), len(CHEXPERT_FINDINGS)))
    stacked = time.perf_counter() - start
    total = args.training + args.validation
    print(f"check_datalist: {total} items in {checked:.2f} s")
    print(f"stack_labels (attach_targets): {args.training} items in {stacked:.2f} s")


if __name__ == "__main__":
    main()
