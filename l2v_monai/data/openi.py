"""OpenI (Indiana University chest X-rays) as a hand-labelled test set, from ``NLMCXR_reports.tgz``.

Each report XML carries manual MeSH *major* tags such as ``Opacity/lung/base/left/mild``: a leading
term, then qualifiers. They are mapped to the 14 CheXpert findings with two tables:

* ``OPENI_MESH_TO_FINDINGS``: leading terms that name a finding on their own
  (``Pulmonary Atelectasis`` → Atelectasis);
* ``OPENI_QUALIFIED_MESH_TO_FINDINGS``: (leading term, qualifier) pairs for terms that name a
  finding only with that qualifier somewhere after them (``Opacity/lung`` → Lung Opacity, but
  ``Opacity/ribs`` → nothing; ``Thickening/pleura`` → Pleural Other).

Matching ignores case and repeated spaces. Tags in neither table (``Calcified Granuloma``,
``Spine/degenerative``, ``Lung/hypoinflation``...) map to no finding.

Label semantics, per report (``openi_labels``):

* a report tagged ``normal`` gets No Finding = 1 and every other finding = 0 (``normal`` never
  appears together with another tag in the real file; if it does, that is an error);
* otherwise a finding whose tag is present is 1;
* a report with at least one tag other than ``normal`` and the non-findings ``No Indexing`` and
  ``Technical Quality of Image Unsatisfactory`` is abnormal and gets No Finding = 0, even when its
  tags map to none of the 14 findings;
* every other finding has no MeSH evidence and stays unlabelled (``null``), so it is left out of
  that finding's AUC. A report with no tags, or only non-finding tags, is unlabelled throughout.

Images are ``<image_root>/<parentImage id>.png`` (the ``NLMCXR_png`` release); there is one item per
image, all sharing their report's labels, with ``study_id`` = the report's ``uId`` so that results
can be grouped per report. The report text kept is the FINDINGS and IMPRESSION ``AbstractText``.
"""

from __future__ import annotations

import math
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.data.datalist import Datalist, DatalistSourceError, ExclusionLog, labels_to_json
from l2v_monai.findings import CHEXPERT_FINDINGS
from l2v_monai.data.report_text import clean_openi_sections

NORMAL_TAG = "normal"
# Tags that say nothing about the patient: an unindexed or unreadable study is not "abnormal".
NON_FINDING_TAGS: frozenset[str] = frozenset({"no indexing", "technical quality of image unsatisfactory"})
IMAGE_SUFFIX = ".png"

SUPPORT_DEVICES = ("Support Devices",)
# Leading MeSH term (lower case) → findings. Edema includes pulmonary congestion and heart failure,
# as the CheXpert labeler's Edema mentions do; blood or fluid with air counts for both findings.
OPENI_MESH_TO_FINDINGS: dict[str, tuple[str, ...]] = {
    "atelectasis": ("Atelectasis",),
    "pulmonary atelectasis": ("Atelectasis",),
    "cardiomegaly": ("Cardiomegaly",),
    "consolidation": ("Consolidation",),
    "edema": ("Edema",),
    "pulmonary edema": ("Edema",),
    "pulmonary congestion": ("Edema",),
    "heart failure": ("Edema",),
    "fractures, bone": ("Fracture",),
    "rib fractures": ("Fracture",),
    "fractures, compression": ("Fracture",),
    "airspace disease": ("Lung Opacity",),
    "infiltrate": ("Lung Opacity",),
    "pleural effusion": ("Pleural Effusion",),
    "hemothorax": ("Pleural Effusion",),
    "pneumonia": ("Pneumonia",),
    "pneumothorax": ("Pneumothorax",),
    "hydropneumothorax": ("Pneumothorax", "Pleural Effusion"),
    "hemopneumothorax": ("Pneumothorax", "Pleural Effusion"),
    "catheters, indwelling": SUPPORT_DEVICES,
    "tube, inserted": SUPPORT_DEVICES,
    "implanted medical device": SUPPORT_DEVICES,
    "medical device": SUPPORT_DEVICES,
    "surgical instruments": SUPPORT_DEVICES,
    "stents": SUPPORT_DEVICES,
    "pacemaker, artificial": SUPPORT_DEVICES,
}
# (leading term, qualifier) → findings, for terms whose meaning depends on the site or descriptor.
OPENI_QUALIFIED_MESH_TO_FINDINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("opacity", "lung"): ("Lung Opacity",),
    ("opacity", "retrocardiac"): ("Lung Opacity",),
    ("opacity", "pulmonary alveoli"): ("Lung Opacity",),
    ("density", "lung"): ("Lung Opacity",),
    ("density", "retrocardiac"): ("Lung Opacity",),
    ("nodule", "lung"): ("Lung Lesion",),
    ("mass", "lung"): ("Lung Lesion",),
    ("cardiac shadow", "enlarged"): ("Cardiomegaly",),
    ("mediastinum", "prominent"): ("Enlarged Cardiomediastinum",),
    ("mediastinum", "enlarged"): ("Enlarged Cardiomediastinum",),
    ("thickening", "pleura"): ("Pleural Other",),
    ("cicatrix", "pleura"): ("Pleural Other",),
    ("costophrenic angle", "blunted"): ("Pleural Effusion",),
    ("pleura", "blunted"): ("Pleural Effusion",),
}
_SPACES = re.compile(r"\s+")


def _term(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def map_mesh_tag(tag: str) -> tuple[str, ...]:
    """Findings named by one MeSH major tag (``"Opacity/lung/base"`` → ``("Lung Opacity",)``), maybe none."""
    leading, *qualifiers = [_term(part) for part in tag.split("/")]
    found: list[str] = list(OPENI_MESH_TO_FINDINGS.get(leading, ()))
    for qualifier in qualifiers:
        found.extend(OPENI_QUALIFIED_MESH_TO_FINDINGS.get((leading, qualifier), ()))
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class OpenIReport:
    """What the builder uses from one report XML (never logged: ``sections`` holds report text)."""

    member: str
    uid: str
    image_ids: tuple[str, ...]
    major_tags: tuple[str, ...]
    sections: dict[str, str]

    @property
    def text(self) -> str:
        """FINDINGS + IMPRESSION, cleaned (:func:`~l2v_monai.data.report_text.clean_openi_sections`); "" when both are empty."""
        return clean_openi_sections(self.sections)

    def mesh_labels(self, findings: Sequence[str] = CHEXPERT_FINDINGS, archive: str | Path | None = None) -> np.ndarray:
        """The report's MeSH truth, ``N`` labels (1, 0, NaN = unlabelled), by :func:`openi_labels`;
        an error names ``archive`` (when given) and the member."""
        where = f"{archive} member {self.member}" if archive is not None else self.member
        return openi_labels(self.major_tags, findings, where)


def openi_labels(tags: Iterable[str], findings: Sequence[str] = CHEXPERT_FINDINGS, where: str = "report") -> np.ndarray:
    """MeSH major tags of one report → ``N`` labels (1, 0, NaN = unlabelled), per the module docstring."""
    tags = [tag for tag in tags if tag and tag.strip()]
    terms = [_term(tag.split("/")[0]) for tag in tags]
    labels = np.full(len(findings), math.nan)
    has_no_finding = "No Finding" in findings
    if NORMAL_TAG in terms:
        others = [tag for tag, term in zip(tags, terms) if term not in (NORMAL_TAG, *NON_FINDING_TAGS)]
        if others:
            raise ValueError(f"{where}: tagged 'normal' together with finding tag(s) {others}")
        labels[:] = 0.0
        if has_no_finding:
            labels[findings.index("No Finding")] = 1.0
        return labels
    if has_no_finding and any(term not in NON_FINDING_TAGS for term in terms):
        labels[findings.index("No Finding")] = 0.0
    for tag in tags:
        for finding in map_mesh_tag(tag):
            if finding in findings:
                labels[findings.index(finding)] = 1.0
    return labels


def _parse_report(member: str, data: bytes, archive: Path) -> OpenIReport:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise DatalistSourceError(archive, f"member {member}: not well-formed XML ({error})") from None
    uid_element = root.find("uId")
    uid = uid_element.get("id", "") if uid_element is not None else ""
    if not uid:
        raise DatalistSourceError(archive, f"member {member}: no <uId id=...>")
    image_ids = tuple(image.get("id", "") for image in root.findall("parentImage"))
    if any(not image_id for image_id in image_ids):
        raise DatalistSourceError(archive, f"member {member}: a <parentImage> has no id")
    tags = tuple((major.text or "").strip() for major in root.iter("major"))
    sections = {text.get("Label", ""): (text.text or "") for text in root.iter("AbstractText")}
    return OpenIReport(member, uid, image_ids, tuple(tag for tag in tags if tag), sections)


def read_openi_reports(archive: str | Path) -> list[OpenIReport]:
    """Every report XML in the ``.tgz`` (read in place, not extracted), sorted by member name."""
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"OpenI report archive not found: {archive}")
    reports = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not (member.isfile() and member.name.lower().endswith(".xml")):
                    continue
                stream = tar.extractfile(member)
                if stream is None:
                    raise DatalistSourceError(archive, f"member {member.name}: cannot be read")
                reports.append(_parse_report(member.name, stream.read(), archive))
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DatalistSourceError(
            archive, f"cannot be read as a tar archive ({type(error).__name__}: {error})"
        ) from None
    if not reports:
        raise DatalistSourceError(archive, "holds no .xml report")
    reports.sort(key=lambda report: report.member)
    seen: dict[str, str] = {}
    for report in reports:
        for image_id in report.image_ids:
            if image_id in seen:
                raise DatalistSourceError(
                    archive, f"parentImage {image_id} appears in {seen[image_id]} and {report.member}"
                )
            seen[image_id] = report.member
    return reports


def openi_label_counts(
    reports: Sequence[OpenIReport], findings: Sequence[str] = CHEXPERT_FINDINGS
) -> dict[str, dict[str, int]]:
    """Per finding, how many reports are positive, negative and unlabelled."""
    matrix = np.stack([r.mesh_labels(findings) for r in reports])
    return {
        finding: {
            "positive": int((matrix[:, j] == 1.0).sum()),
            "negative": int((matrix[:, j] == 0.0).sum()),
            "unlabelled": int(np.isnan(matrix[:, j]).sum()),
        }
        for j, finding in enumerate(findings)
    }


class MissingImagesError(FileNotFoundError):
    """Some OpenI images are not under the image root; lists how many and the first few."""


def build_openi_datalist(
    archive: str | Path,
    image_root: str | Path,
    allow_missing_images: bool = False,
    include_reports: bool = True,
    findings: Sequence[str] = CHEXPERT_FINDINGS,
    reports: Sequence[OpenIReport] | None = None,
) -> Datalist:
    """OpenI reports → a datalist with one ``test`` item per image and a clean ``label`` (N) each.

    Args:
        archive: ``NLMCXR_reports.tgz``.
        image_root: the folder of ``<parentImage id>.png`` files (``NLMCXR_png``).
        allow_missing_images: record image paths even when the files are absent (a labels-only
            datalist, e.g. for counting); by default missing images raise ``MissingImagesError``
            with their count and the first few paths.
        include_reports: store the cleaned FINDINGS + IMPRESSION text under ``report``.
        findings: output findings (default the 14 CheXpert findings).
        reports: already-read reports (``read_openi_reports``), to avoid reading the archive twice.

    Reports without any ``parentImage`` are listed in the exclusions.
    """
    archive = Path(archive)
    image_root = Path(image_root)
    reports = read_openi_reports(archive) if reports is None else reports
    exclusions = ExclusionLog()
    items: list[dict[str, Any]] = []
    missing: list[Path] = []
    for report in reports:
        labels = labels_to_json(report.mesh_labels(findings, archive))
        if not report.image_ids:
            exclusions.add("report has no parentImage", archive, None, report.member)
            continue
        text = report.text if include_reports else None
        for image_id in report.image_ids:
            image = image_root / f"{image_id}{IMAGE_SUFFIX}"
            if not allow_missing_images and not image.is_file():
                missing.append(image)
            item: dict[str, Any] = {"image": str(image), "study_id": report.uid, "label": labels}
            if text is not None:
                item["report"] = text
            items.append(item)
    if missing:
        shown = ", ".join(str(path) for path in missing[:5])
        raise MissingImagesError(
            f"{len(missing)} of {len(items)} OpenI images are missing under {image_root} (first: {shown}); "
            "pass allow_missing_images / --allow-missing-images for a labels-only datalist"
        )
    return Datalist(list(findings), [], {"training": [], "validation": [], "test": items}, exclusions)
