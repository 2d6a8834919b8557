"""Likely mislabelled images (tl_core.evaluation.label_issues): flipped labels among well separated features
are found, few others, the same for a seed; and a run's stored features are read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tl_core.data import Dataset, ImageRecord
from tl_core.errors import DataError
from tl_core.evaluation.label_issues import find_for_run, folds_for, label_issues

CLASSES = ["ant", "bee", "cow"]


def separated(per_class: int = 40, flips: int = 6, seed: int = 0):
    """Three Gaussian clusters far apart in 16-D; ``flips`` images filed under the next class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(3, 16))
    true = np.repeat(np.arange(3), per_class)
    features = centres[true] + rng.normal(0, 1, size=(len(true), 16))
    given = true.copy()
    flipped = rng.choice(len(true), flips, replace=False)
    given[flipped] = (true[flipped] + 1) % 3
    records = [ImageRecord(path=f"{CLASSES[g]}/{i}.jpg", label=CLASSES[g], split=None, sha256=f"{i:064x}",
                           width=8, height=8) for i, g in enumerate(given)]
    return Dataset(root=Path("/nowhere"), name="synthetic", classes=CLASSES, records=records), features, flipped, true


def test_flipped_labels_are_found_with_few_false_alarms():
    ds, features, flipped, true = separated()
    report = label_issues(ds, features, seed=0)
    found = {int(Path(issue.path).stem) for issue in report.issues}
    flipped_set = set(flipped.tolist())
    # Confident learning flags an image when another class's probability reaches that class's
    # mean self-confidence: a flipped image the model is only fairly sure about may stay unflagged.
    assert len(found & flipped_set) >= len(flipped_set) - 1
    assert len(found - flipped_set) <= 2
    by_index = {int(Path(issue.path).stem): issue for issue in report.issues}
    for i in found & flipped_set:
        issue = by_index[int(i)]
        assert issue.given == ds.records[i].label and issue.suggested == CLASSES[true[i]]  # the true class back
        assert issue.confidence > 0.5 > issue.self_confidence
    ranks = [issue.self_confidence for issue in report.issues]
    assert ranks == sorted(ranks)  # the most suspicious first
    assert report.num_images == 120 and report.folds == 5


def test_the_list_is_the_same_for_a_seed():
    ds, features, _, _ = separated(flips=4, seed=1)
    assert label_issues(ds, features, seed=3) == label_issues(ds, features, seed=3)


def test_folds_follow_the_smallest_class_and_a_class_of_one_is_refused():
    assert folds_for([0] * 10 + [1] * 3) == 3
    assert folds_for([0] * 10 + [1] * 30) == 5
    with pytest.raises(DataError, match="at least two images in every class"):
        folds_for([0] * 10 + [1])
    with pytest.raises(DataError, match="two classes"):
        folds_for([0] * 10)


@pytest.mark.slow
def test_a_frozen_runs_stored_features_are_read_back(trained_run_dir):
    """The session's tiny run (a 5-epoch feature extractor without augmentation, trained once per
    test session) stored the eval view of its splits: the list needs no backbone pass."""
    from tl_core.runs import Run
    from tl_core.workspace import Workspace

    run = Run(trained_run_dir)
    workspace = Workspace(run.dir.parent.parent)
    messages: list[str] = []
    report = find_for_run(run, workspace, progress=lambda done, total, message="": messages.append(message))
    assert "running the backbone over the images" not in messages and "reading the images" not in messages
    assert report.num_images == 20 and report.folds == 5
    assert messages[-1] == "done"
