"""Report cleaning: MIMIC sections, OpenI sections, de-identification masking, whitespace."""

from __future__ import annotations

import pytest

from l2v_monai.data.report_text import (
    DEID_TOKEN,
    clean_mimic_report,
    clean_openi_sections,
    mask_deidentification,
    normalise_whitespace,
    read_report_file,
    split_mimic_sections,
)

# Blank lines inside sections carry a space, as in the real files.
MIMIC_REPORT = "\n".join(
    [
        "                                 FINAL REPORT",
        " EXAMINATION:  CHEST (PA AND LAT)",
        "",
        " INDICATION:  ___ year old woman with cough.",
        "",
        " COMPARISON:  ___",
        "",
        " FINDINGS:",
        " ",
        " Heart size is normal.   The lungs are clear.",
        " No effusion.",
        "",
        " IMPRESSION:",
        " ",
        " No acute process.  Discussed with Dr. ___ ___ at 10:00.",
        "",
    ]
)


def test_mimic_keeps_findings_then_impression_and_drops_other_sections():
    cleaned = clean_mimic_report(MIMIC_REPORT)
    assert cleaned == (
        "FINDINGS: Heart size is normal. The lungs are clear. No effusion. "
        f"IMPRESSION: No acute process. Discussed with Dr. {DEID_TOKEN} at 10:00."
    )
    assert "INDICATION" not in cleaned and "cough" not in cleaned


def test_mimic_section_order_in_output_is_fixed_even_if_impression_comes_first():
    text = " IMPRESSION: Small effusion.\n\n FINDINGS: Blunted angle.\n"
    assert clean_mimic_report(text) == "FINDINGS: Blunted angle. IMPRESSION: Small effusion."


def test_mimic_synonym_header_counts_as_impression():
    text = " INDICATION: pain.\n CONCLUSION: Normal chest.\n"
    assert clean_mimic_report(text) == "IMPRESSION: Normal chest."


def test_mimic_without_sections_falls_back_to_last_paragraph():
    text = "EXAMINATION: chest\n\nSome words here.\n\nThe last   paragraph\nwith ___ inside.\n\n"
    assert clean_mimic_report(text) == f"The last paragraph with {DEID_TOKEN} inside."
    assert clean_mimic_report(text, fallback="empty") == ""
    assert clean_mimic_report("plain text,\n no headers", fallback="full") == "plain text, no headers"
    with pytest.raises(ValueError, match="fallback"):
        clean_mimic_report(text, fallback="first")


def test_findings_body_may_start_after_blank_lines():
    text = "INDICATION: x\n FINDINGS:\n\n\nTrailing conclusion sentence."
    # FINDINGS has the trailing text as its body, so it is kept as FINDINGS.
    assert clean_mimic_report(text) == "FINDINGS: Trailing conclusion sentence."


def test_split_mimic_sections_returns_headers_in_order():
    names = [name for name, _ in split_mimic_sections(MIMIC_REPORT)]
    assert names == ["", "EXAMINATION", "INDICATION", "COMPARISON", "FINDINGS", "IMPRESSION"]


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("Dr. ___ at ___.", f"Dr. {DEID_TOKEN} at {DEID_TOKEN}."),
        ("seen ___ ___ ago", f"seen {DEID_TOKEN} ago"),
        ("a ______ run", f"a {DEID_TOKEN} run"),
        ("XXXX yo with XXXX XXXX.", f"{DEID_TOKEN} yo with {DEID_TOKEN}."),
        ("a XXXXyo male", f"a {DEID_TOKEN}yo male"),
        ("snake_case and X-ray and XR", "snake_case and X-ray and XR"),
    ],
)
def test_mask_deidentification(raw, masked):
    assert mask_deidentification(raw) == masked


def test_normalise_whitespace():
    assert normalise_whitespace("  a\n\n b\t c  ") == "a b c"


def test_openi_keeps_findings_and_impression_labels_only():
    sections = {
        "COMPARISON": "Prior XXXX.",
        "INDICATION": "Cough",
        "FINDINGS": "Normal   heart.\nClear lungs XXXX.",
        "IMPRESSION": "No acute disease.",
    }
    assert (
        clean_openi_sections(sections)
        == f"FINDINGS: Normal heart. Clear lungs {DEID_TOKEN}. IMPRESSION: No acute disease."
    )
    assert clean_openi_sections({"FINDINGS": None, "IMPRESSION": "Clear."}) == "IMPRESSION: Clear."
    assert clean_openi_sections({"INDICATION": "x"}) == ""


def test_read_report_file_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="s123.txt"):
        read_report_file(tmp_path / "s123.txt")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe FINDINGS: x")
    with pytest.raises(ValueError, match="bad.txt"):
        read_report_file(tmp_path / "bad.txt")
    (tmp_path / "ok.txt").write_text(MIMIC_REPORT)
    assert read_report_file(tmp_path / "ok.txt").startswith("FINDINGS: Heart size")
