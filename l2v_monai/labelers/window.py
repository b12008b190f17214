"""Labeler two, ``window``: narrow mention lists, NegEx-style triggers with a token-window scope.

Built on different principles from the medspaCy/ConText labeler (``context.py``), so that the two
disagree the way CheXpert and NegBio do:

* **Mentions** are regular expressions over the lower-cased text, narrower than labeler one's
  (no "granuloma" for Lung Lesion, no bare "density" for Lung Opacity, no "port" or bare "clips" for
  devices...). Some patterns state a finding's state outright (``heart size is normal`` → negative
  Cardiomegaly, ``borderline heart size`` → uncertain), the way a radiologist's stock phrases do.
* **Scope** is a token window, not the sentence: a trigger before a mention ("no", "without",
  "may represent"...) reaches ``WINDOW`` content tokens forward, a trigger after it ("is
  excluded", "has resolved", "is suspected"...) ``BACK_WINDOW`` tokens back. Commas, "and", "or"
  and "nor" do not count, so that a list after "no" stays in scope; "but", "however", "which"...
  and sentence ends stop a scope. Pseudo-triggers ("no change", "not only") block a trigger.
* Negation wins over uncertainty inside one mention ("no evidence of possible effusion" is negative).

Pure Python (``re``), so this labeler runs without the ``[reports]`` extra.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence

from l2v_monai.labelers.assertion import Assertion, report_assertions

# Content tokens a forward trigger reaches, and tokens a backward trigger reaches.
WINDOW = 8
BACK_WINDOW = 5
_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[.;:,!?()]")
# Tokens that do not count toward a window: list glue.
_FREE_TOKENS: frozenset[str] = frozenset({",", "and", "or", "nor", "(", ")"})
# Tokens that end every scope.
_SCOPE_ENDS: frozenset[str] = frozenset({".", ";", ":", "!", "?"})

# Severity and site words that may sit inside a mention ("mild bibasilar atelectasis").
_ADJ = r"(?:(?:mild|mildly|moderate|moderately|severe|severely|marked|markedly|minimal|slight|slightly|small|large|"
_ADJ += r"tiny|trace|bilateral|bibasilar|basilar|left|right|patchy|focal|subsegmental|linear|streaky|minor|new|"
_ADJ += r"increased|persistent)\s+)*"

# Finding → (pattern, fixed state or None). A fixed state overrides triggers; None lets triggers decide.
_MENTIONS: dict[str, list[tuple[str, Assertion | None]]] = {
    "Atelectasis": [(r"atelecta(?:sis|ses|tic)", None), (r"(?:lobar|lobe|lung) collapse|collapsed? (?:lung|lobe)", None)],
    "Cardiomegaly": [
        (r"cardiomegaly", None),
        (r"(?:heart|cardiac silhouette|cardiac shadow|heart size|cardiac size)(?: is| are| appears?| remains?)?"
         r"(?: (?:again|still|now))?(?: (?:mildly|moderately|markedly|severely|slightly|minimally))?"
         r" (?:enlarged|large|increased)", None),
        (r"(?:enlarged|large) (?:heart|cardiac silhouette|cardiac shadow)|cardiac enlargement|enlargement of the "
         r"(?:heart|cardiac silhouette)", None),
        (r"(?:heart|cardiac)(?: size| silhouette)?(?: is)?(?: at the)? (?:upper limits? of normal|top normal|"
         r"borderline)|borderline (?:heart|cardiac)(?: size| silhouette)?|(?:heart|cardiac) size (?:is )?borderline",
         Assertion.UNCERTAIN),
        (r"(?:heart|cardiac)(?: size| silhouette| shadow)?(?: and [a-z ]{3,40}?)?(?: is| are| appears?| remains?)?"
         r" (?:normal|within normal limits|upper normal|unremarkable|stable|not enlarged)"
         r"|normal (?:heart|cardiac)(?: size| silhouette)?|heart is normal in size", Assertion.NEGATIVE),
    ],
    "Consolidation": [(r"consolidat(?:ion|ions|ive|ed)", None)],
    "Edema": [
        (r"edema(?:tous)?", None),
        (r"(?:vascular|pulmonary|venous) congestion|congestive heart failure|\bchf\b|heart failure", None),
    ],
    "Enlarged Cardiomediastinum": [
        (r"(?:widened|widening of the|enlarged|prominent) (?:cardio ?mediastin(?:um|al)|mediastin(?:um|al))"
         r"(?: silhouette| contours?)?|mediastinal (?:widening|enlargement|prominence)"
         r"|(?:prominence|widening) of the (?:superior |upper )?(?:mediastinum|mediastinal contours?)"
         r"|mediastinal (?:and hilar )?(?:lymph)?adenopathy", None),
        (r"(?:cardio ?mediastinal|mediastinal) (?:silhouette|contours?)(?: is| are)?(?: mildly| slightly)?"
         r" (?:widened|enlarged|prominent)|mediastinum(?: is)?(?: mildly| slightly)? (?:widened|enlarged|prominent)",
         None),
        (r"(?:cardio ?mediastinal|mediastinal) (?:silhouette|contours?)(?: and [a-z ]{3,40}?)?(?: is| are)?"
         r" (?:normal|within normal limits|unremarkable|stable)|mediastinum(?: is)? (?:normal|unremarkable)"
         r"|normal (?:cardio ?mediastinal|mediastinal) (?:silhouette|contours?)", Assertion.NEGATIVE),
    ],
    "Fracture": [(r"fractur(?:e|es|ed)|\bfx\b", None)],
    "Lung Lesion": [(r"nodul(?:e|es|ar opacit(?:y|ies))|(?:lung|pulmonary|hilar|lobe) mass(?:es)?|\bmass(?:es)?\b", None),
                    (r"(?:lung|pulmonary) lesions?|neoplasm|carcinoma|metasta(?:sis|ses|tic disease)", None)],
    "Lung Opacity": [
        (r"opacit(?:y|ies)|opacification|infiltrat(?:e|es|ive)", None),
        (r"air ?space (?:disease|opacit(?:y|ies)|process)", None),
    ],
    "Pleural Effusion": [
        (r"(?<!pericardial )effusions?", None),
        (r"pleural fluid|hydrothorax|blunt(?:ing|ed) (?:of )?(?:the )?(?:left |right |bilateral )?costophrenic", None),
        (r"costophrenic (?:angles? )?(?:is |are )?blunt(?:ing|ed)", None),
    ],
    "Pleural Other": [
        (r"pleural (?:thickening|scarring|plaques?|calcifications?)|fibrothorax|(?:pleural|apical) cap(?:ping)?",
         None),
        (r"pleural[- ]parenchymal scar(?:ring)?", None),
    ],
    "Pneumonia": [(r"pneumonias?|infectious process|\binfection\b", None)],
    "Pneumothorax": [(r"pneumothora(?:x|ces)|\bptx\b", None)],
    "Support Devices": [
        (r"pacemaker|pacer|defibrillator|\baicd\b|\bicd\b|(?:endotracheal|nasogastric|chest|feeding|tracheostomy|"
         r"\bet|\bng) tube|\bpicc\b|central (?:venous )?(?:line|catheter)|catheter", None),
        (r"sternotomy wires?|sternal wires?|(?:median )?sternotomy|stents?|valve replacement|prosthetic valve", None),
        (r"(?:pacemaker|pacer|cardiac|transvenous) leads?|leads? (?:terminating|terminate|in the right)|generator"
         r"|surgical clips|internal fixation|prosthe(?:sis|tic)", None),
    ],
}

# Trigger phrases (regular expressions) by state and direction.
_NEG_FORWARD = (
    r"\bno\b|\bnot\b|without|negative for|free of|clear of|absence of|absent|resolution of|removal of|"
    r"rather than|ruled out|\bnor\b|cannot see|no evidence of|no signs? of"
)
_NEG_BACKWARD = (
    r"(?:is|are|was|were|has|have)(?: been)? (?:resolved|removed|excluded|ruled out|cleared|absent)|"
    r"\bresolved\b|has cleared|have cleared|no longer (?:seen|present|visible|identified)|not (?:seen|present|"
    r"identified|visualized|appreciated|demonstrated)|is absent|are absent"
)
_UNC_FORWARD = (
    r"\bmay\b|\bmight\b|possibl[ey]|probabl[ey]|question of|questionable|suspicious for|suspect(?:ed)?|"
    r"concerning for|concern for|suggest(?:s|ive of|ing)?|cannot (?:be )?(?:excluded?|ruled? out)|"
    r"can ?not (?:be )?(?:excluded?|ruled? out)|(?:to )?rule out|\br/o\b|evaluate for|evaluation for|"
    r"worrisome for|differential|versus|\bvs\b|likely|equivocal|"
    r"borderline|not excluded|difficult to exclude|indeterminate"
)
_UNC_BACKWARD = (
    r"(?:is|are)? ?(?:not excluded|cannot be excluded|can not be excluded|not ruled out|suspected|possible|"
    r"questioned|likely|unlikely)|(?:could|may|might) be present"
)
# Phrases that contain a trigger word but do not negate or hedge.
_PSEUDO = (
    r"no (?:significant |interval )?change|no increase|no decrease|not only|not significantly changed|"
    r"without change|not well (?:seen|visualized)|likely represents? (?:scar|atelectasis)"
)
# Words that end a trigger's scope.
_TERMINATORS = r"\bbut\b|however|although|though|except|\bwhich\b|\bapart from\b|aside from|otherwise|\bwith\b"


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![a-z0-9])(?:{pattern})(?![a-z0-9])")


_MENTION_PATTERNS: dict[str, list[tuple[re.Pattern[str], Assertion | None]]] = {
    finding: [(_compile(pattern), state) for pattern, state in patterns] for finding, patterns in _MENTIONS.items()
}
_TRIGGERS: tuple[tuple[re.Pattern[str], Assertion, int], ...] = (
    (_compile(_NEG_FORWARD), Assertion.NEGATIVE, +1),
    (_compile(_NEG_BACKWARD), Assertion.NEGATIVE, -1),
    (_compile(_UNC_FORWARD), Assertion.UNCERTAIN, +1),
    (_compile(_UNC_BACKWARD), Assertion.UNCERTAIN, -1),
)
_PSEUDO_PATTERN = _compile(_PSEUDO)
_TERMINATOR_PATTERN = _compile(_TERMINATORS)


class WindowLabeler:
    """Narrow regex mentions + NegEx-style triggers with a token window (see the module docstring)."""

    name = "window"

    def label(self, text: str) -> tuple[Assertion, ...]:
        """One cleaned report → 14 states in ``CHEXPERT_FINDINGS`` order (No Finding derived)."""
        return report_assertions(self.mentions(text))

    def label_many(self, texts: Iterable[str]) -> list[tuple[Assertion, ...]]:
        """Several reports → one 14-state tuple each."""
        return [self.label(text) for text in texts]

    def mentions(self, text: str) -> dict[str, list[Assertion]]:
        """Finding → the states of its mentions in ``text`` (findings without mentions left out)."""
        lower = text.lower()
        tokens = [(match.start(), match.end(), match.group()) for match in _TOKEN.finditer(lower)]
        starts = [start for start, _, _ in tokens]
        blocked = [(m.start(), m.end()) for m in _PSEUDO_PATTERN.finditer(lower)]
        mention_spans: list[tuple[str, int, int, Assertion | None]] = []
        for finding, patterns in _MENTION_PATTERNS.items():
            for pattern, state in patterns:
                for match in pattern.finditer(lower):
                    mention_spans.append((finding, match.start(), match.end(), state))
        if not mention_spans:
            return {}
        triggers = self._triggers(lower, tokens, starts, blocked, mention_spans)
        found: dict[str, list[Assertion]] = {}
        for finding, start, end, fixed in mention_spans:
            if fixed is not None:
                found.setdefault(finding, []).append(fixed)
                continue
            first = bisect.bisect_left(starts, start)
            last = max(first, bisect.bisect_left(starts, end) - 1)
            hits = {state for state, low, high in triggers if low <= first and last <= high}
            if Assertion.NEGATIVE in hits:
                state = Assertion.NEGATIVE
            elif Assertion.UNCERTAIN in hits:
                state = Assertion.UNCERTAIN
            else:
                state = Assertion.POSITIVE
            found.setdefault(finding, []).append(state)
        return found

    @staticmethod
    def _triggers(
        lower: str,
        tokens: Sequence[tuple[int, int, str]],
        starts: Sequence[int],
        blocked: Sequence[tuple[int, int]],
        mention_spans: Sequence[tuple[str, int, int, Assertion | None]],
    ) -> list[tuple[Assertion, int, int]]:
        """Every trigger as (state, first token index, last token index) of the tokens it reaches."""
        terminators = {bisect.bisect_left(starts, m.start()) for m in _TERMINATOR_PATTERN.finditer(lower)}
        mentioned = [(start, end) for _, start, end, _ in mention_spans]
        scopes = []
        for pattern, state, direction in _TRIGGERS:
            for match in pattern.finditer(lower):
                span = (match.start(), match.end())
                # A trigger inside a pseudo-trigger or inside a mention ("absent" in no mention...) is no trigger.
                if any(low <= span[0] and span[1] <= high for low, high in blocked):
                    continue
                if any(low <= span[0] and span[1] <= high for low, high in mentioned):
                    continue
                first = bisect.bisect_left(starts, span[0])
                last = bisect.bisect_left(starts, span[1]) - 1
                if direction > 0:
                    reach = _walk(tokens, terminators, last + 1, +1, WINDOW)
                    scopes.append((state, last + 1, reach))
                else:
                    reach = _walk(tokens, terminators, first - 1, -1, BACK_WINDOW)
                    scopes.append((state, reach, first - 1))
        return scopes


def _walk(tokens: Sequence[tuple[int, int, str]], terminators: set[int], index: int, step: int, size: int) -> int:
    """Walk from ``index`` in direction ``step`` over at most ``size`` content tokens; return the last index."""
    counted = 0
    reached = index - step
    while 0 <= index < len(tokens):
        word = tokens[index][2]
        if word in _SCOPE_ENDS or index in terminators:
            break
        if word not in _FREE_TOKENS:
            counted += 1
            if counted > size:
                break
        reached = index
        index += step
    return reached
