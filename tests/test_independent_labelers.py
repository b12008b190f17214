"""l2v_monai.experiments.independent_labelers: hand-written sentences through both labelers, shape and names."""

from __future__ import annotations


import numpy as np
import pytest

from l2v_monai.findings import CHEXPERT_FINDINGS

F = {name: index for index, name in enumerate(CHEXPERT_FINDINGS)}
NAMES = ["negex_u0", "negex_u1", "regex_u0", "regex_u1"]
U0, U1 = [0, 2], [1, 3]  # the uncertain → 0 and uncertain → 1 sets


@pytest.fixture(scope="module")
def script():
    from l2v_monai.experiments import independent_labelers

    return independent_labelers


@pytest.fixture(scope="module")
def labelled(script):
    texts = [
        "There is a large right pleural effusion.",
        "No pneumothorax.",
        "Cannot exclude pneumonia.",
        "The lungs are clear. Heart size is normal.",
    ]
    return script.label_reports(texts)


def test_shape_and_names(labelled):
    labels, names = labelled
    assert labels.shape == (4, 4, len(CHEXPERT_FINDINGS)) == (4, 4, 14)
    assert labels.dtype == np.float32 and not np.isnan(labels).any()
    assert names == NAMES


def test_positive_mention(labelled):
    labels, _ = labelled
    assert (labels[0, :, F["Pleural Effusion"]] == 1).all()
    assert (labels[0, :, F["No Finding"]] == 0).all()


def test_negation(labelled):
    labels, _ = labelled
    assert (labels[1, :, F["Pneumothorax"]] == 0).all()
    assert (labels[1, :, F["No Finding"]] == 1).all()


def test_uncertain_mention_follows_the_set_policy(labelled):
    labels, _ = labelled
    assert (labels[2, U0, F["Pneumonia"]] == 0).all()
    assert (labels[2, U1, F["Pneumonia"]] == 1).all()


def test_normal_report_is_no_finding(labelled):
    labels, _ = labelled
    assert (labels[3, :, F["No Finding"]] == 1).all()
    others = [j for name, j in F.items() if name != "No Finding"]
    assert (labels[3][:, others] == 0).all()


def test_empty_input(script):
    labels, names = script.label_reports([])
    assert labels.shape == (0, 4, 14) and names == NAMES
