"""The core installs and imports without the extras; an extra-only function names its extra.

One subprocess runs with transformers, crowd-kit, matplotlib, pandas and the report labelers'
packages made unimportable by a ``sitecustomize`` on ``PYTHONPATH`` (a meta-path finder that
raises ``ModuleNotFoundError`` for them), as after a plain ``pip install l2v-monai``. There it
imports every module of the package, runs what the core promises (AUC metric, CSV datalists,
the window labeler, every command's ``--help``) and calls each extra-only function.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Top-level modules of the extras ([reports], [baselines], [eval]) that the core must not need.
HIDDEN = ("transformers", "crowdkit", "matplotlib", "pandas", "medspacy", "spacy", "loguru")
# Modules that may need a package outside the core at import time, with where it comes from. The MONAI Label
# app subclasses MONAI Label's classes, so it imports in MONAI Label's own venv only (bundle/docs/README.md).
EXTRA_ONLY_MODULES: dict[str, str] = {"l2v_monai.apps.monai_label": "monailabel, in a venv of its own"}

SITECUSTOMIZE = textwrap.dedent(
    f"""
    import sys
    from importlib.abc import MetaPathFinder

    HIDDEN = {HIDDEN!r}


    class HideExtras(MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {{fullname!r}} (hidden by the core-import test)", name=fullname)
            return None


    sys.meta_path.insert(0, HideExtras())
    """
)

CHILD = textwrap.dedent(
    r"""
    import contextlib, importlib, io, json, pkgutil, sys
    from pathlib import Path

    import numpy as np
    import torch

    out = Path(sys.argv[1])
    extra_only = json.loads(sys.argv[2])
    result = {"hidden": {}, "imported": [], "failed": {}, "errors": {}, "help": {}, "core": {}}

    for name in json.loads(sys.argv[3]):
        try:
            importlib.import_module(name)
            result["hidden"][name] = "importable"
        except ImportError as error:
            result["hidden"][name] = str(error)

    import l2v_monai

    modules = ["l2v_monai", "l2v_monai.bundle_scripts"]
    modules += [m.name for m in pkgutil.walk_packages(l2v_monai.__path__, "l2v_monai.")]
    # The bundle's scripts install from bundle/scripts (a package-dir of their own): walk them too.
    import l2v_monai.bundle_scripts

    modules += [m.name for m in pkgutil.walk_packages(l2v_monai.bundle_scripts.__path__, "l2v_monai.bundle_scripts.")]
    for name in sorted(set(modules) - set(extra_only)):
        try:
            importlib.import_module(name)
            result["imported"].append(name)
        except Exception as error:
            result["failed"][name] = f"{type(error).__name__}: {error}"

    def error_of(call):
        try:
            call()
        except ImportError as error:
            return {"type": type(error).__name__, "message": str(error), "is_import_error": True}
        except Exception as error:
            return {"type": type(error).__name__, "message": str(error), "is_import_error": False}
        return None

    from l2v_monai import evaluation
    from l2v_monai.labelers import get_labeler
    from l2v_monai.labelers.against_truth import plot_heatmap
    from l2v_monai.data.report_embedding import ReportEncoder

    y = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, np.nan], [0.0, 1.0]])
    score = np.array([[0.1, 0.8], [0.9, 0.3], [0.7, 0.5], [0.4, 0.6]])
    result["errors"] = {
        "plot_roc_curves": error_of(lambda: evaluation.plot_roc_curves(y, score, ["a", "b"], out / "roc")),
        "auc_table": error_of(lambda: evaluation.auc_table({"m": {"a": 0.5}}, ["a"])),
        "evaluate_predictions": error_of(lambda: evaluation.evaluate_predictions(y, score, ["a", "b"], out / "eval")),
        "ReportEncoder": error_of(lambda: ReportEncoder("no-such-model")),
        "context labeler": error_of(lambda: get_labeler("context")),
        "plot_heatmap": error_of(lambda: plot_heatmap({}, out / "heatmap.png")),
    }
    result["core"]["evaluate_predictions wrote nothing"] = not (out / "eval").exists()

    # What the core promises: the validation metric, CSV datalists, the pure-Python labeler, the CLIs' help.
    metric = evaluation.MacroAUC(findings=["a", "b"])
    metric(torch.as_tensor(score), torch.as_tensor(y))
    result["core"]["macro_auc"] = metric.aggregate()
    result["core"]["direct_macro_auc"] = evaluation.per_finding_auc(y, score, ["a", "b"])["macro_auc"]

    from l2v_monai.data.manifest import build_manifest_datalist

    manifest = out / "manifest.csv"
    manifest.write_text("image,split,r1/Edema,r2/Edema\n a.png ,training,1,0\nb.png,validation,,1\n", encoding="utf-8")
    datalist = build_manifest_datalist(manifest, check_images=False, allow_empty_splits=True)
    result["core"]["manifest"] = {"counts": datalist.counts(), "label_sets": datalist.label_sets,
                                  "labels": datalist.splits["training"][0]["labels"]}

    from l2v_monai.cli import label_reports

    reports = out / "reports.csv"
    reports.write_text("id,report\nr1,FINDINGS: Small left pleural effusion. No pneumothorax.\n", encoding="utf-8")
    for labelers in ("window", "context"):
        stderr = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            code = label_reports.main(["--reports", str(reports), "--out", str(out / f"{labelers}.csv"),
                                       "--labelers", labelers, "--no-progress"])
        result["core"][f"label_reports {labelers}"] = {"code": code, "stderr": stderr.getvalue()}

    for name in ("prepare_mimic", "prepare_manifest", "prepare_openi", "label_reports", "embed_reports",
                 "evaluate", "labeler_scores"):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
            try:
                importlib.import_module(f"l2v_monai.cli.{name}").main(["--help"])
                code = None
            except SystemExit as exit_:
                code = exit_.code
            except Exception as error:
                code = f"{type(error).__name__}: {error}"
        result["help"][name] = {"code": code, "usage": stdout.getvalue().startswith("usage:")}

    (out / "result.json").write_text(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def core_only(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("core_only")
    (folder / "hide").mkdir()
    (folder / "hide" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (folder / "child.py").write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder / "hide"), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, str(folder / "child.py"), str(folder), json.dumps(EXTRA_ONLY_MODULES), json.dumps(HIDDEN)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((folder / "result.json").read_text())


def test_the_extras_are_really_hidden(core_only: dict) -> None:
    # Otherwise every other test here would pass for the wrong reason.
    assert set(core_only["hidden"]) == set(HIDDEN)
    assert all("hidden by the core-import test" in message for message in core_only["hidden"].values())


def test_every_module_imports_without_the_extras(core_only: dict) -> None:
    assert core_only["failed"] == {}
    for name in ("l2v_monai", "l2v_monai.strategies.vote", "l2v_monai.strategies", "l2v_monai.engine.trainer", "l2v_monai.bundle_scripts.networks",
                 "l2v_monai.data.datalist", "l2v_monai.data.mimic", "l2v_monai.data.manifest", "l2v_monai.data.openi",
                 "l2v_monai.data.transforms", "l2v_monai.data.cache", "l2v_monai.data.validation",
                 "l2v_monai.engine.checkpoints", "l2v_monai.engine.progress", "l2v_monai.evaluation", "l2v_monai.evaluation.metric",
                 "l2v_monai.evaluation.collector", "l2v_monai.data.report_embedding", "l2v_monai.labelers",
                 "l2v_monai.cli", "l2v_monai.bundle_scripts"):
        assert name in core_only["imported"], name


@pytest.mark.parametrize(
    "call, extra, package",
    [
        ("plot_roc_curves", "eval", "matplotlib"),
        ("auc_table", "eval", "pandas"),
        ("evaluate_predictions", "eval", "pandas"),
        ("plot_heatmap", "eval", "matplotlib"),
        ("ReportEncoder", "reports", "transformers"),
        ("context labeler", "reports", "medspacy"),
    ],
)
def test_an_extra_only_function_names_its_extra(core_only: dict, call: str, extra: str, package: str) -> None:
    error = core_only["errors"][call]
    assert error is not None and error["is_import_error"], error
    assert f"pip install 'l2v-monai[{extra}]'" in error["message"]
    assert repr(package) in error["message"]


def test_evaluation_checks_its_extra_before_writing_anything(core_only: dict) -> None:
    assert core_only["core"]["evaluate_predictions wrote nothing"]


def test_the_core_validates_prepares_and_labels(core_only: dict) -> None:
    core = core_only["core"]
    assert core["macro_auc"] == pytest.approx(core["direct_macro_auc"]) and core["macro_auc"] == pytest.approx(1.0)
    manifest = core["manifest"]
    assert manifest["counts"] == {"training": 1, "validation": 1, "test": 0}
    assert manifest["label_sets"] == ["r1", "r2"] and manifest["labels"] == [[1.0], [0.0]]
    assert core["label_reports window"] == {"code": 0, "stderr": ""}
    context = core["label_reports context"]
    assert context["code"] == 2 and "pip install 'l2v-monai[reports]'" in context["stderr"]


def test_every_command_has_help_without_the_extras(core_only: dict) -> None:
    assert len(core_only["help"]) == 7
    assert all(h == {"code": 0, "usage": True} for h in core_only["help"].values()), core_only["help"]
