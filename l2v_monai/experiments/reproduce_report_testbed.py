"""Compare label strategies on real reports: OpenI, four labeler label sets, the MeSH truth.

Each row trains the same small text model (TF-IDF → MLP, see ``l2v_monai.experiments.report_testbed``)
through the project's ``build_strategy`` / trainer; only the strategy changes. Strategy options are
read from the bundle (``train.json``; the anchored meta vote from ``cifar10.json``), with the run's
seed. Score: k-fold cross-validation, mean AUC against MeSH over the findings with both classes
in each test fold, averaged over folds and seeds.

Development seeds (100, 101) are for choices; the report seed (0) only for the reported table:

    python scripts/reproduce_report_testbed.py --reports NLMCXR_reports.tgz --seeds 0 --out results/report_testbed.md

Split across processes with ``--methods`` (and ``--seeds``), then merge with ``--collect``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2v_monai.experiments.vote_variants import PREVIOUS_CIFAR10, PREVIOUS_TRAIN, VARIANTS

from l2v_monai.labelers.openi_corpus import ReportCorpus, default_cache_dir, label_sets_digest, load_openi_corpus
from l2v_monai.experiments.report_testbed import ModelSettings, make_synthetic_corpus, run_fold, to_json

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "bundle" / "configs"

#: The previous release's train.json / cifar10.json votes (the configs now hold the anchored default).
_PREV, _PREV_CIFAR = PREVIOUS_TRAIN, PREVIOUS_CIFAR10

#: method → (strategy, bundle config its options come from, option overrides, description).
METHODS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "mesh": ("single", "train.json", {"label_set": 0}, "upper bound: trained on MeSH"),
    "set0": ("single", "train.json", {"label_set": 0}, "single set"),
    "set1": ("single", "train.json", {"label_set": 1}, "single set"),
    "set2": ("single", "train.json", {"label_set": 2}, "single set"),
    "set3": ("single", "train.json", {"label_set": 3}, "single set"),
    "mv_ties1": ("majority", "train.json", {"ties": "positive"}, "majority vote, ties → 1"),
    "mv_random": ("majority", "train.json", {"ties": "random"}, "majority vote, random ties (train.json)"),
    "mean": ("mean", "train.json", {}, "mean of the sets"),
    "dawid_skene": ("dawid_skene", "train.json", {}, "Dawid–Skene"),
    "cm": ("cm", "train.json", {}, "confusion matrices (Tanno et al.)"),
    "consensus": ("consensus", "train.json", {}, "consensus (unanimous entries only)"),
    "l2v_paper": ("l2v", "train.json", {"variant": "paper", "feedback": "features"}, "l2v paper"),
    # Ablations of the vote made before the anchored default was settled; each names the options it ran with
    # in full (the previous train.json vote: unanimous anchor, soft, virtual step), so its meaning is fixed.
    "l2v_anchored_meta": ("l2v", "cifar10.json", {**_PREV_CIFAR}, "l2v anchored meta (previous cifar10.json)"),
    "l2v_probe_soft": ("l2v", "train.json", {**_PREV}, "l2v anchored probe, soft (previous train.json default)"),
    "l2v_probe_hard": ("l2v", "train.json", {**_PREV, "refined": "hard"}, "l2v anchored probe, hard"),
    "l2v_probe_soft_nofb": ("l2v", "train.json", {**_PREV, "feedback": "none"}, "l2v anchored probe, soft, no virtual step"),
    "l2v_probe_soft_tie1anchor": ("l2v", "train.json", {**_PREV, "min_confidence": 0.5},
                                  "l2v anchored probe, soft, anchor MV ties → 1 on every entry"),
    "l2v_probe_soft_dspost": ("l2v", "train.json", {**_PREV, "consensus": "dawid_skene_posterior"},
                              "l2v anchored probe, soft, anchor Dawid–Skene posterior"),
    "l2v_probe_hard_nofb": ("l2v", "train.json", {**_PREV, "feedback": "none", "refined": "hard"},
                            "l2v anchored probe, hard, no virtual step"),
    "l2v_probe_soft_nofb_slowvote": ("l2v", "train.json", {**_PREV, "feedback": "none", "vote_lr": None},
                                     "l2v anchored probe, soft, no virtual step, vote at the model's rate (10× slower)"),
    # Refined "No Finding" capped by the other findings (8 = No Finding, 13 = Support Devices in CheXpert order).
    "l2v_probe_soft_nofb_nfcap": ("l2v", "train.json", {**_PREV, "feedback": "none", "no_finding": 8, "no_finding_ignores": [13]},
                                  "l2v anchored probe, soft, no virtual step, No Finding capped by the other findings"),
    # The setting that became the default (confident Dawid–Skene anchor, hard, no virtual step).
    "l2v_probe_ds_hard_nofb": ("l2v", "train.json", {**_PREV, "feedback": "none", "consensus": "dawid_skene", "min_confidence": 0.9,
                                                     "refined": "hard"},
                               "l2v anchored probe, confident Dawid–Skene anchor, hard, no virtual step"),
    # The anchored vote and its ablations (scripts/vote_variants.py).
    **{name: ("l2v", "train.json", changes, text) for name, (changes, text) in VARIANTS.items()},
}
REFERENCE = "mv_ties1"
FEATURES = {
    "tfidf": "TF-IDF (≤ {max_features} word 1–2-grams)",
    "minilm": "the 384-d MiniLM sentence embedding",
    "both": "TF-IDF (≤ {max_features} word 1–2-grams) with the 384-d MiniLM sentence embedding",
}


def strategy_options(method: str, seed: int) -> tuple[str, dict[str, Any]]:
    """The strategy and its options as the bundle config gives them for ``seed``, plus the row's overrides."""
    from monai.bundle import ConfigParser

    name, config, overrides, _ = METHODS[method]
    parser = ConfigParser()
    parser.read_config(CONFIGS / config)
    parser["seed"] = seed
    options = dict(parser.get_parsed_content(f"strategy_options#{name}"))
    options.update(overrides)
    return name, options


def label(method: str, corpus: ReportCorpus | None) -> str:
    name, _, overrides, text = METHODS[method]
    if name == "single" and method != "mesh" and corpus is not None:
        return f"{text} {corpus.set_names[overrides['label_set']]}"
    return text


def run(corpus: ReportCorpus, method: str, seed: int, folds: int, settings: ModelSettings, cache: Path | None) -> list[dict]:
    name, options = strategy_options(method, seed)
    out = []
    for fold in range(folds):
        result = run_fold(corpus, name, options, seed, fold, folds, settings, train_on_truth=method == "mesh", cache_dir=cache)
        result.update(method=method, label=label(method, corpus), options=options)
        out.append(result)
        print(f"{method} seed {seed} fold {fold}: mean AUC {result['mean_auc']:.4f} ({result['seconds']:.0f} s)", flush=True)
    return out


def table(runs: dict[str, list[dict]], findings: list[str], header: list[str]) -> str:
    """Markdown: mean AUC per method, paired Δ against MV ties → 1, then per-finding AUCs."""
    ref = {(r["seed"], r["fold"]): r["mean_auc"] for r in runs.get(REFERENCE, [])}
    lines = header + [
        "| method | mean AUC | per seed (mean over folds) | Δ vs MV ties → 1 (folds better) | s / fold |",
        "|---|---|---|---|---|",
    ]
    order = sorted(runs, key=lambda m: -statistics.fmean(r["mean_auc"] for r in runs[m]))
    for method in order:
        results = runs[method]
        seeds = sorted({r["seed"] for r in results})
        per_seed = " / ".join(f"{statistics.fmean(r['mean_auc'] for r in results if r['seed'] == s):.4f}" for s in seeds)
        paired = [(r["mean_auc"] - ref[(r["seed"], r["fold"])]) for r in results if (r["seed"], r["fold"]) in ref]
        delta = "—" if method == REFERENCE or not paired else (
            f"{statistics.fmean(paired):+.4f} ({sum(d > 0 for d in paired)}/{len(paired)})")
        lines.append(f"| {results[0]['label']} (`{method}`) | {statistics.fmean(r['mean_auc'] for r in results):.4f} | "
                     f"{per_seed} | {delta} | {statistics.fmean(r['seconds'] for r in results):.0f} |")
    short = [f[:12] for f in findings]
    lines += ["", "Per-finding AUC (mean over the folds where the finding has both classes):", "",
              "| method | " + " | ".join(short) + " |", "|---|" + "---|" * len(findings)]
    for method in order:
        cells = []
        for f in findings:
            values = [r["per_finding"][f] for r in runs[method] if r["per_finding"].get(f) is not None
                      and r["per_finding"][f] == r["per_finding"][f]]
            cells.append(f"{statistics.fmean(values):.3f}" if values else "–")
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reports", type=Path, help="the OpenI report archive (NLMCXR_reports.tgz)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="instead of --reports: N tiny seeded synthetic reports (for tests)")
    p.add_argument("--label-source", choices=["labelers", "synthetic"], default="labelers",
                   help="label sets from the project's labelers (default) or seeded noisy copies of MeSH (harness checks)")
    p.add_argument("--label-sets", type=Path, default=None,
                   help="pin the label sets: read them from this .npz, or label once and write it (share it between split runs)")
    p.add_argument("--cache", type=Path, default=None, help=f"cache for label sets and embeddings (default {default_cache_dir()})")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--folds", type=int, default=5)
    defaults = ModelSettings()
    p.add_argument("--features", choices=["tfidf", "minilm", "both"], default=defaults.features)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--hidden", type=int, default=defaults.hidden)
    p.add_argument("--max-features", type=int, default=defaults.max_features)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "report_testbed.md")
    p.add_argument("--collect", nargs="*", type=Path, default=None,
                   help="only merge the .json files of earlier runs (e.g. one process per method) into one table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python scripts/reproduce_report_testbed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    settings = ModelSettings(features=args.features, max_features=args.max_features, hidden=args.hidden,
                             epochs=args.epochs, lr=args.lr)
    runs: dict[str, list[dict]] = {}
    meta: dict[str, Any] = {}
    corpus = None
    if args.collect is not None:
        for path in args.collect:
            data = json.loads(path.read_text())
            meta = meta or data["meta"]
            if data["meta"].get("label_sets_digest") != meta.get("label_sets_digest"):
                p.error(f"{path} was trained on other label sets than {args.collect[0]} (digest "
                        f"{data['meta'].get('label_sets_digest')} vs {meta.get('label_sets_digest')}): rerun with one --label-sets file")
            for method, results in data["runs"].items():
                if method in METHODS and METHODS[method][0] != "single":
                    # Today's name for the row: an older file may call a row "train.json default".
                    results = [{**r, "label": METHODS[method][3]} for r in results]
                runs.setdefault(method, []).extend(results)
    else:
        if args.synthetic:
            corpus = make_synthetic_corpus(args.synthetic, seed=0)
        elif args.reports is None:
            p.error("give --reports (the OpenI archive), --synthetic N or --collect")
        else:
            corpus = load_openi_corpus(args.reports, args.cache, label_source=args.label_source, label_file=args.label_sets)
        sets = np.asarray(corpus.label_sets)
        disagree = float((np.nanmax(sets, axis=1) != np.nanmin(sets, axis=1)).any(axis=1).mean())
        meta = {"reports": len(corpus.texts), "excluded": corpus.excluded, "label_sets": corpus.set_names,
                "label_source": "synthetic corpus" if args.synthetic else args.label_source,
                "findings": corpus.findings, "folds": args.folds, "settings": asdict(settings),
                "reports_where_sets_disagree": disagree, "label_sets_digest": label_sets_digest(sets)}
        for method in args.methods:
            for seed in args.seeds:
                runs.setdefault(method, []).extend(run(corpus, method, seed, args.folds, settings, args.cache))
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    s = meta["settings"]
    excluded = ", ".join(f"{v} {k}" for k, v in meta["excluded"].items()) or "none"
    header = [
        f"Real-report testbed: {meta['reports']} OpenI reports (left out: {excluded}), label sets "
        f"{', '.join(meta['label_sets'])} ({meta['label_source']}; the four sets disagree on at least one finding in "
        f"{100 * meta['reports_where_sets_disagree']:.1f} % of reports), truth = MeSH. {FEATURES[s['features']].format(**s)} "
        f"→ MLP ({s['hidden']} hidden), {s['epochs']} epochs, Adam lr {s['lr']}, "
        f"batch {s['batch_size']}; {meta['folds']}-fold CV, seeds {', '.join(map(str, seeds))}, CPU, one thread. "
        "Mean AUC against MeSH over the findings with both classes in the test fold. Produced by:", "", f"    {command}", "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(runs, meta["findings"], header))
    args.out.with_suffix(".json").write_text(to_json({"meta": meta, "runs": runs}))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
