"""Labeler one, ``context``: medspaCy target rules per finding + ConText, sentence scope.

* **Sentences**: medspaCy's tokenizer and PyRuSH sentence splitter. PyRuSH logs every token at
  DEBUG through loguru; that output is switched off here (``logger.disable``), because it would put
  report text on stderr.
* **Targets** (``TargetMatcher``): broad phrase lists per finding (labeler two's are narrower): e.g.
  "granuloma" and "mass" for Lung Lesion, "density" and "haziness" for Lung Opacity, "port",
  "clips" and "wires" for Support Devices. Overlapping matches keep the longest, so "pericardial
  effusion" (an ignored target) hides "effusion".
* **Size targets**: "heart", "heart size", "cardiac silhouette" (Cardiomegaly), "mediastinum",
  "cardiomediastinal silhouette" (Enlarged Cardiomediastinum) and "pulmonary vasculature" (Edema:
  prominent vessels are how reports describe congestion) are not findings by themselves; they
  count only with a size modifier in their sentence, the nearest one when there are several:
  ENLARGED words ("enlarged", "widened", "prominent") → positive, NORMAL_SIZE words ("normal",
  "within normal limits") → negative, borderline words ("upper limits of normal") → uncertain.
* **ConText** modifiers, in the sentence (or up to ``MAX_SCOPE`` tokens) on their side:
  negation and *resolved* ("has resolved", "resolution of") → negative; possible existence and
  hypothetical ("to rule out", "evaluate for") → uncertain; historical ("history of") → the
  mention is dropped (not a statement about this image). Negation wins over uncertainty.

All phrase lists are this project's own. Needs the ``[reports]`` extra (medspacy).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from l2v_monai.labelers.assertion import Assertion, report_assertions

MAX_SCOPE = 20
BATCH_SIZE = 64

# Target label → finding. Labels ending in _SIZE are size targets (see the module docstring).
_FINDING_OF_LABEL: dict[str, str] = {
    "ATELECTASIS": "Atelectasis",
    "CARDIOMEGALY": "Cardiomegaly",
    "HEART_SIZE": "Cardiomegaly",
    "CONSOLIDATION": "Consolidation",
    "EDEMA": "Edema",
    "ENLARGED_CM": "Enlarged Cardiomediastinum",
    "MEDIASTINUM_SIZE": "Enlarged Cardiomediastinum",
    "VASCULAR_SIZE": "Edema",
    "FRACTURE": "Fracture",
    "LUNG_LESION": "Lung Lesion",
    "LUNG_OPACITY": "Lung Opacity",
    "PLEURAL_EFFUSION": "Pleural Effusion",
    "PLEURAL_OTHER": "Pleural Other",
    "PNEUMONIA": "Pneumonia",
    "PNEUMOTHORAX": "Pneumothorax",
    "SUPPORT_DEVICES": "Support Devices",
}
SIZE_LABELS: frozenset[str] = frozenset({"HEART_SIZE", "MEDIASTINUM_SIZE", "VASCULAR_SIZE"})
IGNORED_LABEL = "IGNORED"

# Target phrases (matched on lower-case tokens), by label.
TARGET_PHRASES: dict[str, tuple[str, ...]] = {
    "ATELECTASIS": (
        "atelectasis", "atelectases", "atelectatic", "atelectatic change", "atelectatic changes", "collapse",
        "collapsed", "volume loss", "loss of volume",
    ),
    "CARDIOMEGALY": (
        "cardiomegaly", "cardiac enlargement", "enlarged heart", "heart enlargement", "enlarged cardiac silhouette",
        "enlargement of the cardiac silhouette", "enlargement of the heart", "enlarged cardiac shadow",
    ),
    "HEART_SIZE": (
        "heart", "heart size", "cardiac size", "cardiac silhouette", "cardiac shadow", "cardiac contour",
        "cardiac contours", "size of the heart", "cardiac",
    ),
    "CONSOLIDATION": ("consolidation", "consolidations", "consolidative", "consolidated", "consolidative opacity"),
    "EDEMA": (
        "edema", "pulmonary edema", "interstitial edema", "alveolar edema", "vascular congestion",
        "pulmonary vascular congestion", "venous congestion", "pulmonary congestion", "congestion",
        "heart failure", "congestive heart failure", "chf", "fluid overload", "cephalization", "kerley b lines",
        "edematous", "vascular redistribution", "pulmonary venous hypertension", "venous hypertension",
    ),
    # Prominent pulmonary vessels are how reports describe congestion (MeSH: Pulmonary Congestion → Edema).
    "VASCULAR_SIZE": (
        "vasculature", "vascularity", "pulmonary vasculature", "pulmonary vascularity", "vascular markings",
        "central vasculature", "central pulmonary vasculature", "vascular", "pulmonary vessels", "lung vascularity",
    ),
    "ENLARGED_CM": (
        "widened mediastinum", "mediastinal widening", "mediastinal enlargement", "enlarged mediastinum",
        "widening of the mediastinum", "enlarged cardiomediastinal silhouette",
    ),
    "MEDIASTINUM_SIZE": (
        "mediastinum", "mediastinal contour", "mediastinal contours", "mediastinal silhouette",
        "cardiomediastinal silhouette", "cardiomediastinal contour", "cardiomediastinal contours",
        "cardio mediastinal silhouette", "cardiomediastinal", "mediastinal",
    ),
    "FRACTURE": (
        "fracture", "fractures", "fractured", "fx", "compression deformity", "compression deformities",
    ),
    "LUNG_LESION": (
        "nodule", "nodules", "nodular", "nodular opacity", "nodular density", "mass", "masses", "lesion",
        "lesions", "tumor", "neoplasm", "carcinoma", "cancer", "malignancy", "metastasis", "metastases",
        "metastatic disease", "granuloma", "granulomas", "granulomata", "cavitary lesion",
    ),
    "LUNG_OPACITY": (
        "opacity", "opacities", "opacification", "opacified", "infiltrate", "infiltrates", "infiltration",
        "airspace disease", "air space disease", "airspace opacity", "airspace opacities", "density",
        "densities", "haziness", "hazy", "increased markings", "interstitial markings", "reticular",
        "reticulonodular", "interstitial prominence", "airspace process",
    ),
    "PLEURAL_EFFUSION": (
        "effusion", "effusions", "pleural effusion", "pleural effusions", "pleural fluid", "hydrothorax",
        "blunting", "blunted", "costophrenic blunting", "layering fluid",
    ),
    "PLEURAL_OTHER": (
        "pleural thickening", "pleural scarring", "pleural scar", "pleural plaque", "pleural plaques",
        "pleural calcification", "pleural calcifications", "fibrothorax", "apical cap", "apical capping",
        "apical pleural thickening", "pleural-parenchymal scarring", "pleuroparenchymal scarring",
        "pleural based opacity", "pleural thickenings", "thickening", "fissural thickening",
        "thickening of the fissure", "pleural capping", "apical scarring", "biapical scarring", "pleural-peripheral scarring",
    ),
    "PNEUMONIA": (
        "pneumonia", "pneumonias", "bronchopneumonia", "infection", "infectious process", "infectious",
        "pneumonitis", "aspiration",
    ),
    "PNEUMOTHORAX": (
        "pneumothorax", "pneumothoraces", "hydropneumothorax", "ptx", "pleural air", "pleural air collection",
        "air collection",
    ),
    "SUPPORT_DEVICES": (
        "pacemaker", "pacer", "pacemaker leads", "leads", "lead", "defibrillator", "aicd", "icd", "catheter",
        "catheters", "picc", "picc line", "central line", "central venous line", "tube", "tubes",
        "endotracheal tube", "port", "port-a-cath", "portacath", "sternotomy", "sternotomy wires", "wires",
        "sternal wires", "clips", "surgical clips", "staples", "stent", "stents", "hardware", "prosthesis",
        "valve replacement", "prosthetic", "device", "drain", "generator", "cerclage", "coil", "coils",
        "plate", "screws", "fixation",
    ),
    # Longer phrases that contain a target word but name something else.
    IGNORED_LABEL: (
        "pericardial effusion", "joint effusion", "mass effect", "soft tissue mass", "breast mass",
        "no acute cardiopulmonary", "cardiac monitor", "monitor leads", "ekg leads", "ecg leads",
        "heart valve", "port of entry", "abdominal density", "bronchial wall thickening", "peribronchial thickening",
        "interstitial thickening", "septal thickening", "wall thickening", "soft tissue thickening",
        "vascular calcification", "vascular calcifications", "vascular clips", "vascular stent",
    ),
}

# ConText modifiers: (phrase, category, direction). Categories beyond medspaCy's own:
# RESOLVED (→ negative), ENLARGED / NORMAL_SIZE (only for size targets).
_F, _B, _BI, _T, _P = "FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO"
MODIFIERS: tuple[tuple[str, str, str], ...] = (
    *((p, "NEGATED_EXISTENCE", _F) for p in (
        "no", "not", "without", "negative for", "free of", "clear of", "no evidence of", "no sign of",
        "no signs of", "absence of", "rather than", "no definite", "no visible", "nor",
        "no radiographic evidence of", "no findings of", "no findings to suggest",
    )),
    *((p, "NEGATED_EXISTENCE", _B) for p in (
        "absent", "is absent", "are absent", "not seen", "not identified", "not present", "not visualized",
        "not appreciated", "not demonstrated", "is excluded", "are excluded", "ruled out", "not enlarged",
        "not widened",
    )),
    ("none", "NEGATED_EXISTENCE", _BI),
    ("resolved", "RESOLVED", _BI),
    *((p, "RESOLVED", _F) for p in (
        "resolution of", "interval resolution of", "removal of", "interval removal of",
        "no longer",
    )),
    *((p, "RESOLVED", _B) for p in (
        "has resolved", "have resolved", "has cleared", "have cleared", "cleared", "no longer seen",
        "no longer visualized", "no longer present", "has been removed", "have been removed", "removed",
    )),
    *((p, "POSSIBLE_EXISTENCE", _F) for p in (
        "may", "might", "could", "possible", "possibly", "probable", "probably", "likely", "questionable",
        "question of", "suspicious for", "suspected", "suspect", "concerning for", "concern for", "suggest",
        "suggests", "suggestive of", "suggesting", "cannot exclude", "cannot rule out", "can not exclude",
        "differential", "versus", "vs", "equivocal", "indeterminate", "worrisome for", "may represent",
        "atypical", "presumed", "presumably", "vs.",
    )),
    ("borderline", "POSSIBLE_EXISTENCE", _BI),
    *((p, "POSSIBLE_EXISTENCE", _B) for p in (
        "cannot be excluded", "can not be excluded", "not excluded", "is not excluded", "not ruled out",
        "is suspected", "are suspected", "is possible", "is likely", "unlikely", "is questioned",
        "upper limits of normal", "upper limit of normal", "upper normal", "top normal", "top-normal",
        "at the upper limits of normal",
    )),
    *((p, "HYPOTHETICAL", _F) for p in (
        "rule out", "to rule out", "r/o", "evaluate for", "evaluation for", "assess for", "to exclude",
        "if", "in case of", "should", "recommend", "correlate for",
    )),
    *((p, "HISTORICAL", _F) for p in ("history of", "hx of", "h/o", "remote history of")),
    *((p, "ENLARGED", _BI) for p in (
        "enlarged", "enlargement", "large", "increased in size", "prominent", "prominence", "widened",
        "widening", "enlarging", "increased", "globular",
    )),
    *((p, "NORMAL_SIZE", _BI) for p in (
        "normal", "normal in size", "within normal limits", "unremarkable", "normal size", "normal-sized",
        "normal sized", "wnl", "upper limits normal in size",
    )),
    *((p, "TERMINATE", _T) for p in (
        "but", "however", "although", "though", "except", "aside from", "apart from", "which", "otherwise",
        "with the exception of",
    )),
    *((p, "PSEUDO", _P) for p in (
        "no change", "no significant change", "no interval change", "not only", "no increase", "no decrease",
        "without change", "not significantly changed", "no significant interval change",
    )),
)
_NEGATIVE_CATEGORIES = frozenset({"NEGATED_EXISTENCE", "RESOLVED"})
_UNCERTAIN_CATEGORIES = frozenset({"POSSIBLE_EXISTENCE", "HYPOTHETICAL"})
_SIZE_CATEGORIES = frozenset({"ENLARGED", "NORMAL_SIZE"})


def _silence_pyrush() -> None:
    """PyRuSH logs report tokens at DEBUG via loguru: disable its logger (and only its)."""
    from loguru import logger

    logger.disable("PyRuSH")


def build_pipeline():  # -> spacy.language.Language (untyped: spacy is an optional import)
    """A medspaCy pipeline with this module's targets and ConText rules (slow: cache it)."""
    try:
        import medspacy
        from medspacy.context import ConTextRule
        from medspacy.target_matcher import TargetRule
    except ImportError as error:
        from l2v_monai.labelers import missing_extra

        raise missing_extra("context", error) from None
    _silence_pyrush()
    nlp = medspacy.load(medspacy_enable=["medspacy_tokenizer", "medspacy_pyrush"], load_rules=False)
    matcher = nlp.add_pipe("medspacy_target_matcher")
    matcher.add([TargetRule(phrase, label) for label, phrases in TARGET_PHRASES.items() for phrase in phrases])
    size_types = set(SIZE_LABELS)
    finding_types = set(_FINDING_OF_LABEL)
    rules = []
    for phrase, category, direction in MODIFIERS:
        allowed = size_types if category in _SIZE_CATEGORIES else finding_types
        terminated_by = None if direction in (_T, _P) else {"TERMINATE"}
        rules.append(
            ConTextRule(
                phrase, category, direction=direction, allowed_types=allowed, max_scope=MAX_SCOPE,
                terminated_by=terminated_by,
            )
        )
    context = nlp.add_pipe("medspacy_context", config={"rules": None, "span_attrs": None})
    context.add(rules)
    return nlp


def mention_state(label: str, categories: set[str]) -> Assertion | None:
    """One target's ConText modifier categories → its state, or ``None`` when it is no mention."""
    if "HISTORICAL" in categories:
        return None
    if label in SIZE_LABELS:
        if "ENLARGED" in categories:
            categories = categories - {"NORMAL_SIZE"}
        elif categories & (_NEGATIVE_CATEGORIES | {"NORMAL_SIZE"}):
            return Assertion.NEGATIVE  # "normal in size", "not enlarged"
        elif not categories & _UNCERTAIN_CATEGORIES:
            return None  # "heart" without a size word says nothing about its size
    if categories & _NEGATIVE_CATEGORIES:
        return Assertion.NEGATIVE
    if categories & _UNCERTAIN_CATEGORIES:
        return Assertion.UNCERTAIN
    return Assertion.POSITIVE


class ConTextLabeler:
    """medspaCy targets + ConText (see the module docstring). Build once: the pipeline is slow to make."""

    name = "context"

    def __init__(self) -> None:
        self.nlp = build_pipeline()

    def label(self, text: str) -> tuple[Assertion, ...]:
        """One cleaned report → 14 states in ``CHEXPERT_FINDINGS`` order (No Finding derived)."""
        return self.label_many([text])[0]

    def label_many(self, texts: Iterable[str]) -> list[tuple[Assertion, ...]]:
        """Several reports → one 14-state tuple each (spaCy batches them)."""
        with warnings.catch_warnings():
            # Our rules are all phrases, so medspaCy's token matcher is empty and spaCy warns (W036) per doc.
            warnings.filterwarnings("ignore", message=r"\[W036\]")
            return [report_assertions(self._mentions(doc)) for doc in self.nlp.pipe(texts, batch_size=BATCH_SIZE)]

    def mentions(self, text: str) -> dict[str, list[Assertion]]:
        """Finding → the states of its mentions in ``text`` (for inspection and tests)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"\[W036\]")
            return self._mentions(self.nlp(text))

    @staticmethod
    def _mentions(doc) -> dict[str, list[Assertion]]:
        found: dict[str, list[Assertion]] = {}
        for ent in doc.ents:
            if ent.label_ == IGNORED_LABEL:
                continue
            state = mention_state(ent.label_, _categories(ent))
            if state is not None:
                found.setdefault(_FINDING_OF_LABEL[ent.label_], []).append(state)
        return found


def _categories(ent) -> set[str]:
    """The ConText categories modifying ``ent``; of its size words only the nearest one counts.

    A sentence such as "heart is enlarged with normal pulmonary vascularity" has two size words;
    each size target takes the one closest to it.
    """
    categories = {m.category for m in ent._.modifiers if m.category not in _SIZE_CATEGORIES}
    sizes = [m for m in ent._.modifiers if m.category in _SIZE_CATEGORIES]
    if sizes:

        def distance(modifier) -> int:
            start, end = modifier.modifier_span
            return max(start - ent.end, ent.start - end, 0)

        categories.add(min(sizes, key=distance).category)
    return categories
