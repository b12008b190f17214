"""A second, independent pair of rule report labelers, written for a robustness check of the label
strategies: their phrase lists come from general radiology knowledge (CheXpert-style mention
phrases, NegEx-style cues) and were not tuned on OpenI or MeSH. They are not the product's
labelers (see l2v_monai/labelers); they exist so the vote can be measured on labelers whose errors
we did not shape.

    python scripts/independent_labelers.py --reports NLMCXR_reports.tgz --out independent_labels.npz

then compare the strategies on these label sets instead of the project's:

    python scripts/reproduce_report_testbed.py --reports NLMCXR_reports.tgz --label-sets independent_labels.npz ...

The two labelers:

- ``negex``: spaCy ``blank("en")`` + sentencizer + PhraseMatcher on mention phrases; NegEx-style
  pre/post negation and uncertainty triggers act within the sentence, cut by termination terms.
- ``regex``: plain regexes on word stems, per clause (sentences split at but/however/although/…),
  with negation and uncertainty cues.

Each gives two label sets, ``<labeler>_u0`` / ``<labeler>_u1`` (uncertain → 0 / 1); a finding not
mentioned is 0, and No Finding is 1 when no finding other than Support Devices is 1. Only the
reports with text are labelled (the same ones ``load_openi_corpus`` keeps). Report text is never printed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union


import numpy as np

from l2v_monai.data.datalist import DatalistSourceError
from l2v_monai.data.openi import read_openi_reports
from l2v_monai.labelers.openi_corpus import write_label_sets
from l2v_monai.extras import import_extra
from l2v_monai.findings import CHEXPERT_FINDINGS

if TYPE_CHECKING:
    from spacy.tokens import Span

FINDINGS = list(CHEXPERT_FINDINGS)
LABEL_SET_NAMES = ["negex_u0", "negex_u1", "regex_u0", "regex_u1"]

# Per report and finding: positive, negative, uncertain, or None (not mentioned).
POS, NEG, UNC = 1, 0, "u"
Mention = Union[int, str, None]
# Over a report's mentions of one finding: any positive > uncertain > negative > not mentioned.
RANK = {None: -1, NEG: 0, UNC: 1, POS: 2}

# ------------------------------------------------------------------------------------------------
# negex: NegEx-style triggers around spaCy PhraseMatcher mentions
# ------------------------------------------------------------------------------------------------
NEGEX_MENTIONS = {
    "Atelectasis": ["atelectasis", "atelectases", "atelectatic", "collapse", "collapsed", "lobar collapse",
                    "volume loss", "subsegmental atelectasis", "plate-like atelectasis", "platelike atelectasis",
                    "discoid atelectasis", "bibasilar atelectasis"],
    "Cardiomegaly": ["cardiomegaly", "enlarged heart", "heart is enlarged", "heart size is enlarged",
                     "heart size enlarged", "cardiac enlargement", "enlargement of the heart",
                     "enlarged cardiac silhouette", "cardiac silhouette is enlarged", "heart is mildly enlarged",
                     "heart size is mildly enlarged", "heart is moderately enlarged", "heart is markedly enlarged",
                     "cardiac silhouette is mildly enlarged", "enlarged cardiac contour", "large heart",
                     "heart size is increased", "increased heart size", "prominent heart"],
    "Consolidation": ["consolidation", "consolidations", "consolidative", "consolidated", "airspace consolidation"],
    "Edema": ["edema", "pulmonary edema", "interstitial edema", "alveolar edema", "vascular congestion",
              "pulmonary vascular congestion", "pulmonary congestion", "heart failure", "chf",
              "congestive heart failure", "fluid overload", "kerley b lines", "kerley lines"],
    "Enlarged Cardiomediastinum": ["widened mediastinum", "mediastinal widening", "mediastinum is widened",
                                   "widening of the mediastinum", "enlarged cardiomediastinal silhouette",
                                   "cardiomediastinal silhouette is enlarged", "enlarged mediastinum",
                                   "mediastinum is enlarged", "mediastinal enlargement",
                                   "enlarged cardiomediastinal contour", "cardiomediastinal enlargement",
                                   "prominent mediastinum", "mediastinal prominence", "widened superior mediastinum"],
    "Fracture": ["fracture", "fractures", "fractured", "rib fracture", "rib fractures", "compression fracture",
                 "compression deformity"],
    "Lung Lesion": ["mass", "masses", "nodule", "nodules", "nodular density", "nodular densities",
                    "nodular opacity", "nodular opacities", "lump", "cavitary lesion", "lung lesion",
                    "pulmonary lesion", "carcinoma", "neoplasm", "tumor", "malignancy", "metastasis", "metastases",
                    "metastatic disease"],
    "Lung Opacity": ["opacity", "opacities", "opacification", "opacifications", "airspace disease",
                     "air space disease", "air-space disease", "airspace opacity", "increased density",
                     "decreased translucency", "infiltrate", "infiltrates", "infiltration", "interstitial markings",
                     "interstitial marking", "interstitial pattern", "interstitial lung disease", "reticular pattern",
                     "reticular markings", "reticulation", "parenchymal scarring", "scarring",
                     "peribronchial thickening", "bronchial wall thickening", "haziness", "hazy opacity",
                     "ground-glass", "ground glass"],
    "Pleural Effusion": ["pleural effusion", "pleural effusions", "effusion", "effusions", "pleural fluid",
                         "hydrothorax", "blunting of the costophrenic angle", "blunting of the costophrenic angles",
                         "costophrenic angle blunting", "blunted costophrenic angle", "blunted costophrenic angles"],
    "Pleural Other": ["pleural thickening", "fibrothorax", "fibrothoraces", "pleural scar", "pleural scarring",
                      "pleural-parenchymal scarring", "pleuroparenchymal scarring", "pleural plaque",
                      "pleural plaques", "pleural calcification", "calcified pleural plaque",
                      "calcified pleural plaques", "apical pleural thickening", "apical cap"],
    "Pneumonia": ["pneumonia", "pneumonias", "bronchopneumonia", "infection", "infectious process",
                  "infectious", "pneumonic"],
    "Pneumothorax": ["pneumothorax", "pneumothoraces", "pneumothoraxes", "hydropneumothorax"],
    "Support Devices": ["tube", "tubes", "endotracheal tube", "et tube", "ng tube", "nasogastric tube",
                        "feeding tube", "chest tube", "tracheostomy", "central line", "central venous catheter",
                        "picc", "picc line", "catheter", "catheters", "pacemaker", "pacer", "defibrillator",
                        "aicd", "icd", "port", "port-a-cath", "portacath", "mediport", "leads", "lead",
                        "stent", "stents", "hardware", "prosthesis", "prosthetic valve", "valve replacement",
                        "drain", "device", "generator", "swan-ganz", "cannula", "coil", "coils"],
}
# Longer phrases that contain a mention but are not the finding: matched with the mentions, so the
# longest match swallows the shorter mention, and then dropped.
NEGEX_IGNORE = ["pericardial effusion", "pericardial effusions", "mass effect", "soft tissue mass", "breast mass",
                "calcified granuloma", "no change", "no interval change", "lead apron",
                "tube/line", "icd-9", "port side"]

NEGEX_PRE_NEG = ["no", "not", "without", "negative for", "no evidence of", "no signs of", "no sign of",
                 "absence of", "absent", "free of", "no radiographic evidence of", "no convincing",
                 "no definite", "no acute", "no new", "resolution of", "resolved", "clear of", "rather than",
                 "denies", "nor", "never", "no longer", "removal of", "interval removal of", "negative"]
NEGEX_POST_NEG = ["is absent", "are absent", "absent", "has resolved", "have resolved", "resolved", "is resolved",
                  "not seen", "is not seen", "are not seen", "not identified", "not present", "is not identified",
                  "are not identified", "not visualized", "no longer seen", "no longer visualized", "has cleared",
                  "have cleared", "cleared", "removed", "has been removed", "have been removed", "free", "unlikely",
                  "ruled out", "not appreciated", "not evident"]
NEGEX_PRE_UNC = ["possible", "possibly", "may", "may represent", "might", "could", "could represent", "probable",
                 "probably", "likely", "questionable", "question of", "questioned", "suspicious for", "suspicious",
                 "suspect", "suspected", "suggest", "suggests", "suggestive of", "suggesting", "concerning for",
                 "concern for", "cannot exclude", "can not exclude", "cannot rule out", "can not rule out",
                 "cannot be excluded", "not excluded", "differential", "differential diagnosis", "consider",
                 "considered", "worrisome for", "borderline", "equivocal", "versus", "vs", "vs.",
                 "may be", "could be", "perhaps", "presumed", "presumably", "uncertain", "indeterminate",
                 "rule out", "r/o", "correlate", "compatible with", "atypical", "cannot be ruled out"]
NEGEX_POST_UNC = ["cannot be excluded", "can not be excluded", "not excluded", "not be excluded",
                  "cannot be ruled out", "can not be ruled out", "not ruled out", "is possible", "are possible",
                  "is suspected", "are suspected", "is questioned", "versus", "vs", "vs.", "is likely",
                  "are likely", "is not excluded", "could be", "may be", "is suggested", "questionable",
                  "not entirely excluded"]
# Phrases that look like a negation but negate nothing; they only consume their words.
NEGEX_PSEUDO = ["no increase", "no change", "no significant change", "no interval change", "not only",
                "no suspicious change", "not necessarily", "gram negative", "without difficulty", "not certain whether",
                "not cause", "not drain", "no definite change", "without change", "not extend", "no further"]
NEGEX_TERM = ["but", "however", "although", "though", "except", "aside from", "apart from", "which", "still",
              "nevertheless", "yet", "otherwise", "other than", "with the exception of", "whereas", "while",
              "as well as", "and there is", "there is", "there are", "with", ";", ":"]
# A trigger that contains a negation but expresses doubt ("cannot exclude") counts as uncertain,
# whichever list matched it.
NEGEX_NEGATED_DOUBT = {"cannot exclude", "can not exclude", "cannot rule out", "can not rule out",
                       "cannot be excluded", "can not be excluded", "not excluded", "not be excluded",
                       "cannot be ruled out", "can not be ruled out", "not ruled out", "is not excluded",
                       "not entirely excluded", "not certain whether"}
NEGEX_SCOPE = 12  # tokens before a mention that a pre-trigger reaches; post-triggers reach half as far


class NegexLabeler:
    """Sentence-scoped NegEx on spaCy phrase matches; ``label(text)`` → finding → POS/NEG/UNC/None."""

    def __init__(self) -> None:
        # spaCy comes with the [reports] extra (medspaCy needs it); imported here so the module imports without it.
        spacy = import_extra("spacy", "reports", "the NegEx labeler")
        from spacy.matcher import PhraseMatcher
        from spacy.tokens import Span
        from spacy.util import filter_spans

        self._span: Any = Span
        self._filter_spans: Any = filter_spans
        self.nlp = spacy.blank("en")
        self.nlp.add_pipe("sentencizer")
        self.mentions = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        for finding, phrases in NEGEX_MENTIONS.items():
            self.mentions.add("F|" + finding, [self.nlp.make_doc(p) for p in phrases])
        self.mentions.add("IGNORE", [self.nlp.make_doc(p) for p in NEGEX_IGNORE])
        self.triggers = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        for name, phrases in [("PRE_NEG", NEGEX_PRE_NEG), ("POST_NEG", NEGEX_POST_NEG), ("PRE_UNC", NEGEX_PRE_UNC),
                              ("POST_UNC", NEGEX_POST_UNC), ("PSEUDO", NEGEX_PSEUDO), ("TERM", NEGEX_TERM)]:
            self.triggers.add(name, [self.nlp.make_doc(p) for p in phrases])

    @staticmethod
    def _clean(text: str) -> str:
        # OpenI's de-identification mark would split into tokens and sentences of its own.
        text = text.replace("[DEID]", "xxxx")
        return re.sub(r"\.{2,}", ".", text)

    def label(self, text: str) -> dict[str, Mention]:
        doc = self.nlp(self._clean(text))
        out: dict[str, Mention] = {f: None for f in FINDINGS}
        for sent in doc.sents:
            sdoc = sent.as_doc()
            spans = self._filter_spans([self._span(sdoc, s, e, label=k) for k, s, e in self.mentions(sdoc)])
            spans = [sp for sp in spans if sp.label_ != "IGNORE"]
            if not spans:
                continue
            found = [self._span(sdoc, s, e, label=k) for k, s, e in self.triggers(sdoc)]
            # Pre- and post-triggers are de-overlapped separately (longest wins), so "absent" can be
            # both; pseudo-triggers take part only to swallow the cues inside them.
            pre = self._filter_spans([t for t in found if not t.label_.startswith("POST")])
            post = self._filter_spans([t for t in found if not t.label_.startswith("PRE")])
            triggers = [t for t in pre if t.label_ != "PSEUDO"] + [t for t in post if t.label_.startswith("POST")]
            for sp in spans:
                finding = sp.label_.split("|", 1)[1]
                value = self._classify(sp, triggers)
                if RANK[value] > RANK[out[finding]]:
                    out[finding] = value
        return out

    @staticmethod
    def _classify(mention: "Span", triggers: "list[Span]") -> Mention:
        neg = unc = False
        terms = [t for t in triggers if t.label_ == "TERM"]
        for t in triggers:
            phrase = t.text.lower()
            if t.label_ in ("PRE_NEG", "PRE_UNC") and t.end <= mention.start and mention.start - t.end <= NEGEX_SCOPE:
                # a termination term between trigger and mention cuts the scope
                if any(t.end <= m.start and m.end <= mention.start for m in terms):
                    continue
                if t.label_ == "PRE_UNC" or phrase in NEGEX_NEGATED_DOUBT:
                    unc = True
                else:
                    neg = True
            elif (t.label_ in ("POST_NEG", "POST_UNC") and t.start >= mention.end
                  and t.start - mention.end <= NEGEX_SCOPE // 2):
                if any(mention.end <= m.start and m.end <= t.start for m in terms):
                    continue
                if t.label_ == "POST_UNC" or phrase in NEGEX_NEGATED_DOUBT:
                    unc = True
                else:
                    neg = True
        if unc:
            return UNC
        if neg:
            return NEG
        return POS


# ------------------------------------------------------------------------------------------------
# regex: stem patterns and cue words per clause
# ------------------------------------------------------------------------------------------------
REGEX_MENTIONS = {
    f: re.compile(p, re.I)
    for f, p in {
        "Atelectasis": r"atelecta",
        "Cardiomegaly": r"cardiomegal|\bheart (?:size )?(?:is |appears )?(?:\w+ly )?enlarged|enlarged heart"
                        r"|cardiac enlargement|enlarged cardiac",
        "Consolidation": r"consolidat",
        "Edema": r"edema|vascular congestion",
        "Enlarged Cardiomediastinum": r"mediastin\w*\s+(?:\w+\s+){0,3}widen|widen\w*\s+(?:\w+\s+)?mediastin"
                                      r"|enlarged cardiomediastin|cardiomediastinal (?:\w+ )?(?:is )?enlarged",
        "Fracture": r"fractur",
        "Lung Lesion": r"\bnodul|\bmass(?:es)?\b|\blesions?\b",
        "Lung Opacity": r"opacit",
        "Pleural Effusion": r"(?<!pericardial )\beffusion",
        "Pleural Other": r"pleural thickening|pleural plaque",
        "Pneumonia": r"pneumonia|infiltrat",
        "Pneumothorax": r"pneumothora",
        "Support Devices": r"\b(?:tubes?|lines?|catheters?|pacemakers?|pacers?|wires?|clips?)\b",
    }.items()
}
REGEX_NEG_BEFORE = re.compile(r"\b(?:no|not|without|negative for|free of|resolved|clear|removed|absent)\b", re.I)
REGEX_NEG_AFTER = re.compile(r"\b(?:resolved|removed|absent|not seen|cleared)\b", re.I)
# Any uncertainty cue anywhere in the clause makes all its mentions uncertain.
REGEX_UNC = re.compile(r"\b(?:may|might|could|possible|possibly|cannot exclude|cannot be excluded|can't exclude"
                       r"|not excluded|likely|probable|probably|suggest\w*|question\w*|versus|vs|suspicio\w*"
                       r"|concern\w*|differential)\b", re.I)
# Sentences end at . ! ? or a line break, and before a numbered item ("1. ...").
REGEX_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+|\s+(?=\d\.\s)")
REGEX_CLAUSE = re.compile(r"\b(?:but|however|although|though|except)\b|;", re.I)


def regex_label(text: str) -> dict[str, Mention]:
    """Clause-scoped regex labels: finding → POS/NEG/UNC/None."""
    text = text.replace("[DEID]", "xxxx")
    out: dict[str, Mention] = {f: None for f in FINDINGS}
    for sentence in REGEX_SENTENCE.split(text):
        for clause in REGEX_CLAUSE.split(sentence):
            if not clause.strip():
                continue
            unc = bool(REGEX_UNC.search(clause))
            for finding, pattern in REGEX_MENTIONS.items():
                m = pattern.search(clause)
                if not m:
                    continue
                if unc:
                    value = UNC
                elif REGEX_NEG_BEFORE.search(clause[:m.start()]) or REGEX_NEG_AFTER.search(clause[m.end():]):
                    value = NEG
                else:
                    value = POS
                if RANK[value] > RANK[out[finding]]:
                    out[finding] = value
    return out


# ------------------------------------------------------------------------------------------------
def to_sets(labeled: list[dict[str, Mention]]) -> tuple[np.ndarray, np.ndarray]:
    """(u0, u1) arrays of shape (n, 14); No Finding derived as in CheXpert (devices don't count)."""
    n = len(labeled)
    u0 = np.zeros((n, len(FINDINGS)), np.float32)
    u1 = np.zeros((n, len(FINDINGS)), np.float32)
    no_finding = FINDINGS.index("No Finding")
    devices = FINDINGS.index("Support Devices")
    for i, mentions in enumerate(labeled):
        for j, finding in enumerate(FINDINGS):
            if finding == "No Finding":
                continue
            value = mentions[finding]
            u0[i, j] = 1.0 if value == POS else 0.0
            u1[i, j] = 1.0 if value in (POS, UNC) else 0.0
    others = [j for j in range(len(FINDINGS)) if j not in (no_finding, devices)]
    u0[:, no_finding] = (u0[:, others].sum(1) == 0).astype(np.float32)
    u1[:, no_finding] = (u1[:, others].sum(1) == 0).astype(np.float32)
    return u0, u1


def label_reports(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Label sets of shape (len(texts), 4, 14), float32, and their names (``LABEL_SET_NAMES``)."""
    negex = NegexLabeler()
    negex_u0, negex_u1 = to_sets([negex.label(t) for t in texts])
    regex_u0, regex_u1 = to_sets([regex_label(t) for t in texts])
    labels = np.stack([negex_u0, negex_u1, regex_u0, regex_u1], axis=1).astype(np.float32)
    return labels, list(LABEL_SET_NAMES)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=Path, required=True, help="the OpenI report archive (NLMCXR_reports.tgz)")
    parser.add_argument("--out", type=Path, required=True, help="label sets .npz to write (for --label-sets)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        reports = read_openi_reports(args.reports)
    except (DatalistSourceError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # The same texts load_openi_corpus keeps, so that the .npz's fingerprint matches there.
    texts = [r.text for r in reports if r.text.strip()]
    labels, names = label_reports(texts)
    written = write_label_sets(args.out, texts, labels, names)
    disagree = float((labels.max(axis=1) != labels.min(axis=1)).mean())
    print(f"wrote {written}: {len(texts)} reports, label sets {', '.join(names)}; "
          f"the four sets disagree on {disagree:.1%} of report×finding entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
