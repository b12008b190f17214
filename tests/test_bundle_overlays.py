"""The bundle's configs as model-zoo overlays, and from where they run.

* ``evaluate.json`` is an overlay of ``train.json``: it changes keys (``preprocessing#...``,
  ``data#require``, ``datalist_check#...``) and never restates a block or an expression of it.
* Every config resolves its ``preprocessing`` and ``network_def`` through a bare ``ConfigParser`` from
  inside ``bundle/`` and from the repository root (``--bundle_root bundle``, as ``ckpt_export`` is
  called), with the
  same classes and the same output folders, and imports nothing it should not: it resolves with
  the optional extras hidden (``inference.json`` with ``l2v_monai`` hidden too), and never takes
  the repository's own ``scripts/`` folder for the bundle's.

Resolution runs in a fresh interpreter per case, as ``ckpt_export`` and ``verify_net_in_out`` do
(a plain ``ConfigParser``, before MONAI's ``run()`` has put the bundle folder on ``sys.path``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
CONFIGS = BUNDLE / "configs"
# The pip extras (l2v_monai/extras.py): resolving a bundle config must never need one of them.
EXTRAS = ("transformers", "medspacy", "crowdkit", "matplotlib", "pandas")
# Workflow step lists: an overlay replaces these whole, as model-zoo's evaluate.json does.
STEP_LISTS = ("initialize", "run", "finalize")


def parsed(*names: str, **overrides: Any) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([CONFIGS / name for name in names])
    parser.update(overrides)
    return parser


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """The ``#`` paths where two raw config values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            yield from differences(a.get(key), b.get(key), f"{path}#{key}" if path else str(key))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}#{index}" if path else str(index))
    elif a != b:
        yield path


def state(transform: Any) -> tuple[str, dict[str, Any]]:
    return type(transform).__name__, dict(vars(transform))


def test_evaluate_preprocessing_is_trains_without_the_label_sets() -> None:
    """Evaluation scores hand labels: the same steps as training, except that the noisy label sets are not required."""
    train, evaluate = parsed("train.json"), parsed("train.json", "evaluate.json")
    trained = [state(t) for t in train.get_parsed_content("preprocessing").transforms]
    evaluated = [state(t) for t in evaluate.get_parsed_content("preprocessing").transforms]
    sets_step = [i for i, (_, attrs) in enumerate(trained) if attrs.get("num_label_sets") == len(train["label_sets"])]
    assert sets_step, "training checks the number of label sets"
    for i in sets_step:
        assert evaluated[i][1]["num_label_sets"] is None
        evaluated[i][1]["num_label_sets"] = trained[i][1]["num_label_sets"]
    assert evaluated == trained  # and nothing else differs once resolved
    # Scoring each training label set against the hand labels checks their count again.
    with_sets = parsed("train.json", "evaluate.json", label_set_auc=True).get_parsed_content("preprocessing")
    assert [state(t) for t in with_sets.transforms] == trained


def test_report_step_is_switched_by_use_report_alone(tmp_path: Path) -> None:
    from l2v_monai.data.report_embedding import EmbeddingCache, save_embedding_cache

    vectors = tmp_path / "report_embeddings.pt"
    save_embedding_cache(EmbeddingCache(model="m", dim=2, pooling="mean", max_length=8, embeddings={}), vectors)
    for names in (("train.json",), ("train.json", "evaluate.json")):
        steps = parsed(*names, use_report=True, report_embeddings=str(vectors)).get_parsed_content("preprocessing")
        assert type(steps.transforms[-1]).__name__ == "AttachReportEmbeddingd" and len(steps.transforms) == 4


@pytest.mark.parametrize("overlay", ["evaluate.json", "multi_gpu_train.json"])
def test_overlays_change_keys_of_train_instead_of_restating_blocks(overlay: str) -> None:
    train = parsed("train.json")
    raw = json.loads((CONFIGS / overlay).read_text())
    for key, value in raw.items():
        if "#" in key:  # a mistyped path would silently add a key nobody reads
            parent = key.rsplit("#", 1)[0]
            assert parent in train, f"{overlay}: {key} changes {parent}, which train.json does not have"
        elif key in train and key not in STEP_LISTS:  # a block it takes over must change it, not copy it
            assert value != train.config[key], f"{overlay} restates train.json's {key!r} unchanged"
    if overlay == "evaluate.json":
        assert parsed("train.json", overlay)["data"]["require"] == [] and train["data"]["require"]


# What the fresh interpreter reports: the classes resolved, the output folders, the modules imported.
PROBE = r"""
import importlib.abc, json, sys
from pathlib import Path

files, overrides, keys, root, blocked = json.loads(sys.argv[1])


class Absent(importlib.abc.MetaPathFinder):
    # As in an environment where these are not installed (MONAI's own optional imports then skip them).
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None


sys.meta_path.insert(0, Absent())
from monai.bundle import ConfigParser

parser = ConfigParser()
parser.read_config(files)
parser.update(overrides)
report = {"classes": {}, "folders": {}}
for key in keys:
    value = parser.get_parsed_content(key)
    for part in getattr(value, "transforms", [value]):
        cls = type(part)
        report["classes"].setdefault(key, []).append([cls.__module__, cls.__name__, sys.modules[cls.__module__].__file__])
for key in ("ckpt_dir", "output_dir"):
    if key in parser:
        report["folders"][key] = str(Path(parser.get_parsed_content(key)).resolve())
places = {name: [m.__file__] if getattr(m, "__file__", None) else [str(p) for p in getattr(m, "__path__", [])]
          for name, m in list(sys.modules.items()) if m is not None}
report["local"] = {name: paths for name, paths in places.items() if any(p.startswith(root) for p in paths)}
print("PROBE " + json.dumps(report))
"""

POC_SMALL = {"dataset": "digits", "max_train": 100, "max_test": 50}
CASES = {
    "train": (["train.json"], {}, ["preprocessing", "network_def"]),
    "evaluate": (["train.json", "evaluate.json"], {}, ["preprocessing", "network_def"]),
    "multi_gpu": (["train.json", "multi_gpu_train.json"], {}, ["preprocessing", "network_def"]),
    "inference": (["inference.json"], {}, ["preprocessing", "network_def"]),
    "poc": (["cifar10.json"], POC_SMALL, ["network_def"]),
}


def probe(case: str, where: str) -> dict[str, Any]:
    names, overrides, keys = CASES[case]
    # Inference is the standalone bundle: monai, torch, torchvision, pydicom, pillow and its scripts/.
    blocked = [*EXTRAS, "l2v_monai"] if case == "inference" else list(EXTRAS)
    if where == "bundle":  # cd bundle && python -m monai.bundle ... --config_file configs/x.json
        cwd, files = BUNDLE, [f"configs/{n}" for n in names]
    else:  # python -m monai.bundle ... --config_file bundle/configs/x.json --bundle_root bundle
        cwd, files, overrides = ROOT, [f"bundle/configs/{n}" for n in names], {**overrides, "bundle_root": "bundle"}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([files, overrides, keys, str(ROOT), blocked])],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{case} from {where}:\n{proc.stderr[-4000:]}"
    line = next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


@pytest.mark.parametrize("case", list(CASES))
def test_config_resolves_the_same_from_inside_bundle_and_from_the_repository_root(case: str) -> None:
    inside, outside = probe(case, "bundle"), probe(case, "root")
    assert inside["classes"] == outside["classes"]
    assert inside["folders"] == outside["folders"]
    for folder in inside["folders"].values():  # outputs land in the bundle, whichever way it was called
        assert Path(folder).is_relative_to(BUNDLE), folder
    module, network_class, network_file = inside["classes"]["network_def"][0]
    if case == "poc":
        assert network_class == "SmallCNN"
    else:  # the bundle's own network definition, as a bundle user's copy would load it
        assert (module, network_class) == ("scripts.networks", "ResNet50Classifier")
        assert Path(network_file) == BUNDLE / "scripts" / "networks.py"
    for report in (inside, outside):
        repo_scripts = [name for name, paths in report["local"].items()
                        if any(Path(p).is_relative_to(ROOT / "scripts") for p in paths)]
        assert repo_scripts == [], f"{case} imported the repository's scripts/ folder: {repo_scripts}"
