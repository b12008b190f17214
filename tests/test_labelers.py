"""Report labelers: hand-written sentences per labeler, label sets, silence, label_reports.py, OpenI table."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from l2v_monai.data.manifest import build_manifest_datalist
from l2v_monai.findings import CHEXPERT_FINDINGS
from l2v_monai.labelers import LABELERS, Assertion, MissingLabelerExtraError, get_labeler, label_set_names, label_sets
from l2v_monai.labelers.assertion import report_assertions
from l2v_monai.labelers.against_truth import disagreement_fraction, finding_quality, quality_table
from l2v_monai.labelers.sources import ReportSourceError, check_not_empty, read_report_source

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "openi-reports" / "NLMCXR_reports.tgz"
COMMITTED_TABLE = ROOT / "results" / "labeler_quality.json"
F = {name: index for index, name in enumerate(CHEXPERT_FINDINGS)}
P, N, U, M = Assertion.POSITIVE, Assertion.NEGATIVE, Assertion.UNCERTAIN, Assertion.NOT_MENTIONED
# A word that appears in no rule list: if it shows up on stdout/stderr, report text leaked.
SECRET = "Quuxlanderwick"

try:
    import medspacy  # noqa: F401

    HAVE_MEDSPACY = True
except ImportError:
    HAVE_MEDSPACY = False
needs_medspacy = pytest.mark.skipif(not HAVE_MEDSPACY, reason="the [reports] extra (medspacy) is not installed")

# (sentence, finding, expected state from `context`, expected state from `window`).
# Where the two differ, it is by design (broader/narrower mention lists, historical mentions).
SENTENCES: list[tuple[str, str, Assertion, Assertion]] = [
    # negation
    ("No pleural effusion.", "Pleural Effusion", N, N),
    ("No pneumothorax.", "Pneumothorax", N, N),
    ("No cardiomegaly.", "Cardiomegaly", N, N),
    ("No acute fracture.", "Fracture", N, N),
    ("No focal consolidation.", "Consolidation", N, N),
    ("No pulmonary edema.", "Edema", N, N),
    ("No evidence of pneumothorax, pleural effusion, or focal airspace consolidation.", "Pneumothorax", N, N),
    ("No evidence of pneumothorax, pleural effusion, or focal airspace consolidation.", "Consolidation", N, N),
    ("No edema, effusion, pneumothorax, pneumonia, hilar adenopathy, nodules or masses.", "Lung Lesion", N, N),
    ("The lungs are free of focal airspace disease.", "Lung Opacity", N, N),
    ("No effusion but there is left basilar atelectasis.", "Atelectasis", P, P),
    ("No effusion but there is left basilar atelectasis.", "Pleural Effusion", N, N),
    ("No change in the right pleural effusion.", "Pleural Effusion", P, P),
    ("No new focal consolidation.", "Consolidation", N, N),
    # positive
    ("There is a small left pleural effusion.", "Pleural Effusion", P, P),
    ("Blunting of the left costophrenic angle.", "Pleural Effusion", P, P),
    ("Tiny right apical pneumothorax.", "Pneumothorax", P, P),
    ("Right lower lobe pneumonia.", "Pneumonia", P, P),
    ("Bibasilar atelectasis.", "Atelectasis", P, P),
    ("Mild pulmonary edema.", "Edema", P, P),
    ("Pulmonary vascular congestion.", "Edema", P, P),
    ("Old healed left rib fractures.", "Fracture", P, P),
    ("A 1 cm nodule in the right upper lobe.", "Lung Lesion", P, P),
    ("Infiltrate in the left lower lobe.", "Lung Opacity", P, P),
    ("Stable pleural thickening at the left apex.", "Pleural Other", P, P),
    ("Small pericardial effusion.", "Pleural Effusion", M, M),
    # uncertainty
    ("Possible small right pleural effusion.", "Pleural Effusion", U, U),
    ("Pneumothorax cannot be excluded.", "Pneumothorax", U, U),
    ("Findings are concerning for pneumonia.", "Pneumonia", U, U),
    ("Patchy opacity in the right lower lobe may represent atelectasis or pneumonia.", "Lung Opacity", P, P),
    ("Patchy opacity in the right lower lobe may represent atelectasis or pneumonia.", "Pneumonia", U, U),
    ("Patchy opacity in the right lower lobe may represent atelectasis or pneumonia.", "Atelectasis", U, U),
    # hypothetical
    ("To rule out pneumonia.", "Pneumonia", U, U),
    ("Evaluate for pneumothorax.", "Pneumothorax", U, U),
    # resolved / historical
    ("The left pleural effusion has resolved.", "Pleural Effusion", N, N),
    ("Interval resolution of the right pneumothorax.", "Pneumothorax", N, N),
    ("The endotracheal tube has been removed.", "Support Devices", N, N),
    ("History of pneumonia.", "Pneumonia", M, P),
    # normal-size wording
    ("Heart size is normal.", "Cardiomegaly", N, N),
    ("The heart is normal in size.", "Cardiomegaly", N, N),
    ("The heart is not enlarged.", "Cardiomegaly", N, N),
    ("The heart is enlarged.", "Cardiomegaly", P, P),
    ("Mild cardiomegaly.", "Cardiomegaly", P, P),
    ("Borderline heart size.", "Cardiomegaly", U, U),
    ("Heart size is upper limits of normal.", "Cardiomegaly", U, U),
    ("The cardiomediastinal silhouette is within normal limits.", "Enlarged Cardiomediastinum", N, N),
    ("The mediastinum is widened.", "Enlarged Cardiomediastinum", P, P),
    ("The heart is mildly enlarged.", "Enlarged Cardiomediastinum", M, M),
    # each size target takes its nearest size word
    ("Heart size normal, mediastinum widened.", "Cardiomegaly", N, N),
    ("Heart size normal, mediastinum widened.", "Enlarged Cardiomediastinum", P, P),
    ("The heart is enlarged with normal pulmonary vascularity.", "Cardiomegaly", P, P),
    ("The heart is enlarged with normal pulmonary vascularity.", "Edema", N, M),
    ("Mild prominence of the pulmonary vascularity.", "Edema", P, M),
    # devices
    ("Left-sided pacemaker with leads in the right atrium and ventricle.", "Support Devices", P, P),
    ("Endotracheal tube tip 3 cm above the carina.", "Support Devices", P, P),
    ("Right PICC line terminates in the SVC.", "Support Devices", P, P),
    ("Right chest port in place.", "Support Devices", P, M),
    # broad (context) vs narrow (window) mention lists
    ("Calcified granuloma in the left upper lobe.", "Lung Lesion", P, M),
    ("Increased density at the left base.", "Lung Opacity", P, M),
    # No Finding (CheXpert's rule)
    ("Lungs are clear.", "No Finding", P, P),
    ("No acute cardiopulmonary abnormality.", "No Finding", P, P),
    ("Pacemaker in place. Lungs are clear.", "No Finding", P, P),
    ("Small left pleural effusion.", "No Finding", N, N),
    ("Possible left lower lobe pneumonia.", "No Finding", N, N),
    ("No pneumothorax or pleural effusion. Heart size is normal.", "No Finding", P, P),
]


def _labeler_params():
    return [
        pytest.param("context", marks=needs_medspacy),
        pytest.param("window"),
    ]


def test_enough_hand_written_sentences():
    assert len(SENTENCES) >= 40
    assert sum(c != w for _, _, c, w in SENTENCES) >= 3  # the labelers are not the same rules


@pytest.mark.parametrize("name", _labeler_params())
def test_hand_written_sentences(name):
    labeler = get_labeler(name)
    column = 2 if name == "context" else 3
    wrong = []
    for row in SENTENCES:
        sentence, finding = row[0], row[1]
        got = labeler.label(sentence)[F[finding]]
        if got is not row[column]:
            wrong.append(f"{sentence!r} {finding}: expected {row[column].name}, got {got.name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", _labeler_params())
def test_label_many_equals_label(name):
    labeler = get_labeler(name)
    texts = [row[0] for row in SENTENCES[:12]]
    assert labeler.label_many(texts) == [labeler.label(text) for text in texts]


def test_report_assertions_combines_and_applies_no_finding_rule():
    states = report_assertions({"Pleural Effusion": [N, U], "Support Devices": [P]})
    assert states[F["Pleural Effusion"]] is U
    assert states[F["Support Devices"]] is P
    assert states[F["No Finding"]] is N  # an uncertain finding stops No Finding
    assert report_assertions({"Pneumothorax": [N, P, U]})[F["Pneumothorax"]] is P
    only_devices = report_assertions({"Support Devices": [P], "Edema": [N]})
    assert only_devices[F["No Finding"]] is P and only_devices[F["Edema"]] is N
    assert report_assertions({})[F["Atelectasis"]] is M
    with pytest.raises(KeyError, match="No Finding"):
        report_assertions({"No Finding": [P]})


def test_label_sets_shape_names_and_mappings():
    texts = ["Possible right pleural effusion.", "No pneumothorax.", ""]
    labels, names = label_sets(texts, ["window"])
    assert names == ["window_u0", "window_u1"] == label_set_names(["window"])
    assert labels.shape == (3, 2, 14) and labels.dtype == np.float32
    effusion, ptx, nofinding = F["Pleural Effusion"], F["Pneumothorax"], F["No Finding"]
    assert labels[0, :, effusion].tolist() == [0.0, 1.0]  # uncertain → 0 / 1
    assert labels[1, :, ptx].tolist() == [0.0, 0.0]  # negative
    assert labels[1, :, effusion].tolist() == [0.0, 0.0]  # not mentioned → 0 (MIMIC blank policy)
    assert labels[0, :, nofinding].tolist() == [0.0, 0.0] and labels[2, :, nofinding].tolist() == [1.0, 1.0]
    missing, _ = label_sets(texts, ["window"], not_mentioned=math.nan)
    assert np.isnan(missing[1, 0, effusion]) and missing[1, 0, ptx] == 0.0
    assert label_sets([], ["window"])[0].shape == (0, 2, 14)
    with pytest.raises(KeyError, match="unknown labeler"):
        label_sets(texts, ["negbio"])
    with pytest.raises(TypeError, match="report 1"):
        label_sets(["ok", None], ["window"])


@needs_medspacy
def test_label_sets_all_labelers_order_and_cache():
    labels, names = label_sets(["There is a small left pleural effusion."])
    assert names == ["context_u0", "context_u1", "window_u0", "window_u1"]
    assert labels.shape == (1, 4, 14) and (labels[0, :, F["Pleural Effusion"]] == 1.0).all()
    assert get_labeler("context") is get_labeler("context")


def test_missing_extra_gives_a_clear_error(monkeypatch):
    # None in sys.modules makes `import medspacy` raise ImportError, as when the extra is absent.
    monkeypatch.setitem(sys.modules, "medspacy", None)
    with pytest.raises(MissingLabelerExtraError, match=r"'medspacy', part of the 'reports' extra.*pip install 'l2v-monai\[reports\]'"):
        LABELERS["context"]()
    assert LABELERS["window"]().label("No pneumothorax.")[F["Pneumothorax"]] is N


def test_package_imports_without_medspacy():
    code = "import sys; sys.modules['medspacy'] = None; import l2v_monai, l2v_monai.labelers; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "ok"


@needs_medspacy
def test_no_report_text_reaches_stdout_or_stderr(capfd):
    text = f"FINDINGS: {SECRET} pleural effusion. No pneumothorax. IMPRESSION: {SECRET} heart is enlarged."
    capfd.readouterr()
    labels, _ = label_sets([text, text], progress=True)
    get_labeler("context").label(text)
    out, err = capfd.readouterr()
    assert SECRET not in out + err and "pneumothorax" not in (out + err).lower()
    assert labels[0, 0, F["Pleural Effusion"]] == 1.0


def _write_reports_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "report"])
        writer.writerows(rows)
    return path


def _run_label_reports(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "label_reports.py"), *args], capture_output=True, text=True
    )


@needs_medspacy
def test_label_reports_csv_writes_a_manifest_prepare_manifest_reads(tmp_path):
    reports = _write_reports_csv(
        tmp_path / "reports.csv",
        [
            ("r1", f"FINDINGS: {SECRET}. Small left pleural effusion.\nIMPRESSION: Possible pneumonia."),
            ("r2", "Heart size is normal. Lungs are clear."),
        ],
    )
    out = tmp_path / "labels.csv"
    result = _run_label_reports("--reports", str(reports), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert SECRET not in result.stdout + result.stderr and "effusion" not in (result.stdout + result.stderr).lower()
    assert "labeling" in result.stderr  # the progress bar
    datalist = build_manifest_datalist(out, findings=CHEXPERT_FINDINGS, check_images=False)
    assert datalist.label_sets == ["context_u0", "context_u1", "window_u0", "window_u1"]
    items = datalist.splits["training"]
    assert [item["study_id"] for item in items] == ["r1", "r2"]
    labels = np.array(items[0]["labels"], dtype=float)
    assert labels[:, F["Pleural Effusion"]].tolist() == [1, 1, 1, 1]
    assert labels[:, F["Pneumonia"]].tolist() == [0, 1, 0, 1]  # uncertain → 0 / 1
    assert np.array(items[1]["labels"], dtype=float)[:, F["No Finding"]].tolist() == [1, 1, 1, 1]


def test_label_reports_folder_and_blank_not_mentioned(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "s1.txt").write_text("FINDINGS: No pneumothorax.\n\nIMPRESSION: Cardiomegaly.", encoding="utf-8")
    (folder / "s2.txt").write_text("Small right pleural effusion.", encoding="utf-8")
    (folder / "notes.md").write_text("not a report", encoding="utf-8")
    out = tmp_path / "labels.csv"
    result = _run_label_reports(
        "--reports", str(folder), "--out", str(out), "--labelers", "window", "--not-mentioned", "blank",
        "--image-template", "images/{id}.dcm", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["image"], r["study_id"]) for r in rows] == [("images/s1.dcm", "s1"), ("images/s2.dcm", "s2")]
    assert rows[0]["window_u0/Pneumothorax"] == "0" and rows[0]["window_u0/Cardiomegaly"] == "1"
    assert rows[0]["window_u0/Edema"] == ""  # not mentioned → blank (missing)
    assert rows[1]["window_u1/Pleural Effusion"] == "1"


def test_label_reports_errors_name_the_report(tmp_path):
    reports = _write_reports_csv(tmp_path / "reports.csv", [("good", "No pneumothorax."), ("bad-7", "   ")])
    out = tmp_path / "labels.csv"
    result = _run_label_reports("--reports", str(reports), "--out", str(out), "--labelers", "window")
    assert result.returncode != 0 and "bad-7" in result.stderr and "--allow-empty" in result.stderr
    assert not out.exists()
    result = _run_label_reports(
        "--reports", str(reports), "--out", str(out), "--labelers", "window", "--allow-empty", "--no-progress"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[1]["window_u0/No Finding"] == "" and rows[0]["window_u0/No Finding"] == "1"
    assert "1 empty report" in result.stderr

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "latin1.txt").write_bytes("Pleural effusion \xe9".encode("latin-1"))
    with pytest.raises(ReportSourceError, match="'latin1'.*not UTF-8"):
        read_report_source(folder)
    repeated = _write_reports_csv(tmp_path / "twice.csv", [("a", "x"), ("a", "y")])
    with pytest.raises(ReportSourceError, match="repeated id.*a"):
        read_report_source(repeated)
    with pytest.raises(ReportSourceError, match="holds no .txt"):
        read_report_source(_empty_dir(tmp_path))
    with pytest.raises(ReportSourceError, match="not a .csv"):
        read_report_source(_touch(tmp_path / "reports.json"))
    with pytest.raises(ReportSourceError, match="no text.*empty-1"):
        check_not_empty(read_report_source(_write_reports_csv(tmp_path / "e.csv", [("empty-1", "")])), "e.csv", False)


def _empty_dir(base: Path) -> Path:
    folder = base / "empty"
    folder.mkdir()
    return folder


def _touch(path: Path) -> Path:
    path.write_text("{}", encoding="utf-8")
    return path


def test_quality_table_numbers():
    truth = np.array([[1.0], [1.0], [0.0], [0.0], [math.nan]] * 5)
    predicted = np.array([[1.0], [0.0], [0.0], [1.0], [1.0]] * 5)
    row = finding_quality(predicted[:, 0], truth[:, 0])
    assert (row["positives"], row["negatives"]) == (10, 10)
    assert row["sensitivity"] == 0.5 and row["specificity"] == 0.5 and row["balanced_accuracy"] == 0.5
    labels = np.stack([predicted, truth.copy()], axis=1)
    labels[np.isnan(labels)] = 0.0
    table = quality_table(labels, truth, ["a_u0", "a_u1"], findings=["X"], min_positives=10)
    assert table["better_mapping"] == {"a": {"set": "a_u1", "mean_balanced_accuracy": 1.0}}
    assert quality_table(labels, truth, ["a_u0", "a_u1"], findings=["X"], min_positives=11)["findings"] == []
    assert disagreement_fraction(labels) == pytest.approx(0.6)  # rows 2, 4, 5 of each block differ


def _committed_rows(name: str) -> dict:
    table = json.loads(COMMITTED_TABLE.read_text(encoding="utf-8"))
    return {key: row for key, row in table["sets"].items() if key.startswith(f"{name}_")}, table


@pytest.mark.skipif(not ARCHIVE.is_file(), reason="needs the OpenI report archive")
@pytest.mark.parametrize("name", [pytest.param("context", marks=[needs_medspacy, pytest.mark.slow]), "window"])
def test_openi_quality_reproduces_committed_table(name):
    from l2v_monai.labelers.against_truth import openi_quality

    committed, whole = _committed_rows(name)
    table = openi_quality(ARCHIVE, [name])
    assert table["findings"] == whole["findings"] and table["reports"] == 3955
    for set_name, row in committed.items():
        assert table["sets"][set_name]["mean_balanced_accuracy"] == pytest.approx(row["mean_balanced_accuracy"], abs=5e-4)
        for finding, metrics in row["findings"].items():
            for metric in ("sensitivity", "specificity", "balanced_accuracy"):
                assert table["sets"][set_name]["findings"][finding][metric] == pytest.approx(metrics[metric], abs=5e-4)
    # The targets of the labelers' issue: better mapping ≥ 0.85 mean balanced accuracy.
    assert table["better_mapping"][name]["mean_balanced_accuracy"] >= 0.85


def _openi_archive(path: Path, reports: dict[str, tuple[list[str], str]]) -> Path:
    """A tiny NLMCXR-style archive: uid → (parentImage ids, FINDINGS text)."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for uid, (images, findings) in reports.items():
            parents = "".join(f'<parentImage id="{image}"/>' for image in images)
            data = (
                f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="{uid}"/><Abstract>'
                f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
                '<AbstractText Label="INDICATION">cough</AbstractText>'
                f"</Abstract><MeSH><major>normal</major></MeSH>{parents}</eCitation>"
            ).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{uid}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_openi_archive_gives_one_row_per_image(tmp_path):
    from l2v_monai.labelers.sources import manifest_rows

    archive = _openi_archive(
        tmp_path / "NLMCXR_reports.tgz",
        {"CXR1": (["CXR1_1", "CXR1_2"], "Small left pleural effusion."), "CXR2": ([], "No pneumothorax.")},
    )
    reports = read_report_source(archive)
    assert [(r.report_id, r.image_ids) for r in reports] == [("CXR1", ("CXR1_1", "CXR1_2")), ("CXR2", ())]
    assert reports[0].text == "FINDINGS: Small left pleural effusion."  # INDICATION is not read
    labels, names = label_sets([r.text for r in reports], ["window"])
    header, rows = manifest_rows(reports, labels, names, "png/{id}.png")
    assert header[:3] == ["image", "study_id", "window_u0/Atelectasis"] and len(header) == 2 + 2 * 14
    assert [row[:2] for row in rows] == [["png/CXR1_1.png", "CXR1"], ["png/CXR1_2.png", "CXR1"], ["png/CXR2.png", "CXR2"]]
    effusion = header.index("window_u0/Pleural Effusion")
    assert [row[effusion] for row in rows] == ["1", "1", "0"]
