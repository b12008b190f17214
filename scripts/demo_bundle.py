"""The chest X-ray bundle's whole workflow, the way a new user first meets it (``make demo-bundle``).

It copies ``bundle/`` to an output folder and, from inside that copy, runs what a user runs:

1. builds a small synthetic MIMIC-CXR-style tree (drawn images, the four CSVs, template reports)
   and its datalists with ``scripts/prepare_mimic.py`` (the ``l2v-prepare-mimic`` command);
2. ``run training`` (2 epochs, 64-pixel images) with the default strategy (the posterior vote);
3. evaluation on the "hand-labelled" test split: the per-finding AUC table and ROC plots;
4. inference on a folder of test images, with a synthetic DICOM and, given ``--dicom``, a real one;
5. ``ckpt_export`` to TorchScript.

The images are drawn shapes, not radiographs, and the run is tiny: every number it prints is
meaningless. It shows the workflow and where each output lands, not a result.

    python scripts/demo_bundle.py --out demo-bundle [--dicom /path/to/a/chest.dcm]
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from l2v_monai.experiments.synthetic_mimic import make_mimic_tree

ROOT = Path(__file__).resolve().parents[1]
# Small enough for 2 CPU cores in a couple of minutes; the bundle's defaults are for real data.
SMALL = ["--image_size", "64", "--batch_size", "4", "--num_workers", "0"]


def _run(step: str, cmd: list[str], cwd: Path) -> float:
    """Run one workflow step; on failure show its output's tail and stop."""
    print(f"\n== {step}\n$ (cd {cwd} && {shlex.join(cmd)})", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-6000:])
        raise SystemExit(f"demo-bundle: step '{step}' failed (exit {proc.returncode}); its output is above")
    print(f"   done in {seconds:.0f} s", flush=True)
    return seconds


def _hand_label_csv(datalist: dict, path: Path) -> None:
    """Stand-in hand labels for the test split: CheXpert's definite positives (the drawn shapes follow them)."""
    findings = datalist["findings"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dicom_id", *findings])
        for item in datalist["test"]:
            che_u0 = item["labels"][datalist["label_sets"].index("che_u0")]
            writer.writerow([item["dicom_id"], *(1 if value == 1 else 0 for value in che_u0)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "demo-bundle", help="output folder (replaced if it exists)")
    parser.add_argument("--dicom", type=Path, default=None, help="a real chest X-ray DICOM to add to the inference inputs")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.dicom is not None and not args.dicom.is_file():
        parser.error(f"--dicom {args.dicom}: no such file")

    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    bundle = out / "bundle"
    shutil.copytree(ROOT / "bundle", bundle, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    data = out / "mimic"
    python = sys.executable

    # 1. Data: a synthetic MIMIC tree (JPEGs and DICOMs of the same pictures), its datalists.
    tree = make_mimic_tree(data, n_subjects=20, studies_per_subject=2, image_format="both", size=96)
    _run("prepare: training datalist from the CheXpert and NegBio label files",
         [python, str(ROOT / "scripts" / "prepare_mimic.py"), "labelers", "--root", str(data), "--out", str(data / "datalist.json")], out)
    datalist = json.loads((data / "datalist.json").read_text())
    _hand_label_csv(datalist, data / "hand_labels.csv")
    _run("prepare: the hand-labelled test set",
         [python, str(ROOT / "scripts" / "prepare_mimic.py"), "hand-labels", "--csv", str(data / "hand_labels.csv"),
          "--root", str(data), "--out", str(data / "hand_labelled.json")], out)

    # 2-3. Train, then evaluate on the hand-labelled split, from inside the bundle copy.
    _run("train: run training (learning-to-vote over neg_u0, neg_u1, che_u0, che_u1)",
         [python, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
          "--dataset_dir", str(data), "--epochs", str(args.epochs), *SMALL], bundle)
    _run("evaluate: per-finding AUC table and ROC plots",
         [python, "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/evaluate.json']",
          "--dataset_dir", str(data), *SMALL], bundle)

    # 4. Inference on a folder of images: test JPEGs, one synthetic DICOM, and a real DICOM if given.
    inputs = out / "inference_inputs"
    inputs.mkdir()
    test_images = [image for image in tree["images"] if image["split"] == "test" and image["view"] in ("PA", "AP")]
    for image in test_images[:4]:
        shutil.copy(image["paths"]["jpg"], inputs / image["paths"]["jpg"].name)
    shutil.copy(test_images[0]["paths"]["dcm"], inputs / "synthetic.dcm")
    if args.dicom is not None:
        shutil.copy(args.dicom, inputs / "real.dcm")
    _run("infer: 14 probabilities per image",
         [python, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
          "--dataset_dir", str(inputs), *SMALL], bundle)

    # 5. TorchScript export for MONAI Deploy / Label.
    _run("export: TorchScript",
         [python, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", "models/model.ts",
          "--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"], bundle)

    auc_rows = list(csv.reader(open(bundle / "eval" / "test" / "auc.csv")))
    predictions = list(csv.reader(open(bundle / "eval" / "predictions.csv")))
    print(f"\nThe workflow ran in {time.perf_counter() - started:.0f} s. Where each output landed:")
    print(f"  data          {data}  (datalist.json, hand_labelled.json)")
    print(f"  checkpoints   {bundle / 'models'}  (model.pt, checkpoint.pt)")
    print(f"  evaluation    {bundle / 'eval' / 'test'}  (auc.csv: {len(auc_rows) - 1} rows, roc/*.png, summary.json)")
    print(f"  predictions   {bundle / 'eval' / 'predictions.csv'}  ({len(predictions)} images"
          f"{', one a real DICOM' if args.dicom is not None else ''})")
    print(f"  TorchScript   {bundle / 'models' / 'model.ts'}")
    print("The images are drawn shapes and the run is tiny: these numbers mean nothing; the workflow is the point.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
