"""Likely mislabelled images: confident learning on out-of-fold probabilities of backbone features.

1. Features: the eval view (centre crop) of every image through a run's body, as the trainer
   computes them (``model.features.feature_numerics``), through the workspace's ``FeatureStore``:
   a frozen-backbone run's stored features (its validation set, its training set when it trained
   without augmentation) are read back, the rest computed once and stored for the next time.
2. Out-of-fold probabilities: scikit-learn's ``cross_val_predict`` of a logistic regression (after a
   ``StandardScaler``), stratified K folds with K = min(5, smallest class), seeded. Every image is
   judged by a model that did not see it, so a wrong label cannot vouch for itself.
3. The rule: cleanlab's ``filter.find_label_issues`` (confident learning, Northcutt, Jiang and
   Chuang 2021, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR), its default
   ``prune_by_noise_rate``, ranked by self-confidence (the probability of the given label, lowest
   first). cleanlab is a pure-Python wheel needing only numpy, scikit-learn, pandas, tqdm and
   termcolor, so it is used rather than the rule written again here.

Each issue names the given label, the suggested one (the most probable other class) and how
confident the out-of-fold model is in it. A list to look at, not a verdict: some flagged images are
merely hard or ambiguous.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tl_core.errors import DataError

if TYPE_CHECKING:
    from tl_core.data.dataset import Dataset
    from tl_core.runs import Run
    from tl_core.workspace import Workspace

ProgressFn = Callable[[int, int, str], None]  # (done, total, message), as tl_core.data's
MAX_FOLDS = 5
METHOD = ("cleanlab's find_label_issues (confident learning) on out-of-fold probabilities of a logistic "
          "regression on the backbone's features")


@dataclass(frozen=True)
class LabelIssue:
    path: str  # the record's path, relative to the dataset folder
    given: str  # the class the image is filed under
    suggested: str  # the class the out-of-fold model finds most likely among the others
    confidence: float  # out-of-fold probability of ``suggested``
    self_confidence: float  # out-of-fold probability of ``given`` (low: suspicious); the ranking


@dataclass(frozen=True)
class LabelIssueReport:
    issues: list[LabelIssue]  # most suspicious first
    num_images: int  # images judged
    folds: int  # K of the cross-validation
    method: str = METHOD


def folds_for(labels: Sequence[int]) -> int:
    """K = min(5, images of the smallest class); DataError when a class has fewer than two."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    counts = counts[counts > 0]
    if len(counts) < 2:
        raise DataError("Finding mislabelled images needs at least two classes with images.")
    if counts.min() < 2:
        raise DataError("Finding mislabelled images needs at least two images in every class "
                        "(each image is judged by a model trained on the others); add images to the small classes.")
    return int(min(MAX_FOLDS, counts.min()))


def out_of_fold_probs(features: np.ndarray, labels: Sequence[int], seed: int = 0) -> np.ndarray:
    """P(class | image) [N, C] for each image from a logistic regression fitted on the other folds
    (C = max label + 1; a class without images gets probability 0)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels, dtype=np.int64)
    present = np.unique(y)
    compact = np.searchsorted(present, y)  # classes without images would leave a column out
    folds = StratifiedKFold(folds_for(y), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a not-quite-converged fit still ranks well
        probs = cross_val_predict(model, np.asarray(features, dtype=np.float64), compact, cv=folds,
                                  method="predict_proba")
    out = np.zeros((len(y), int(y.max()) + 1))
    out[:, present] = probs
    return out


def find_issues(labels: Sequence[int], probs: np.ndarray) -> list[int]:
    """Indices of the likely mislabelled images, most suspicious first (cleanlab's rule)."""
    from cleanlab.filter import find_label_issues

    y = np.asarray(labels, dtype=np.int64)
    present = np.unique(y)  # cleanlab wants every column's class among the labels
    ranked = find_label_issues(np.searchsorted(present, y), probs[:, present],
                               return_indices_ranked_by="self_confidence", n_jobs=1)  # no worker processes in the app
    return [int(i) for i in ranked]


def label_issues(ds: Dataset, features: np.ndarray, seed: int = 0) -> LabelIssueReport:
    """The likely mislabelled images of ``ds`` given one feature row per record (record order)."""
    labels = ds.labels
    if len(features) != len(labels):
        raise DataError(f"Expected one feature row per image ({len(labels)}), got {len(features)}.")
    probs = out_of_fold_probs(features, labels, seed)
    issues = []
    for i in find_issues(labels, probs):
        given = labels[i]
        others = probs[i].copy()
        others[given] = -1.0
        suggested = int(others.argmax())
        issues.append(LabelIssue(path=ds.records[i].path, given=ds.classes[given], suggested=ds.classes[suggested],
                                 confidence=float(probs[i, suggested]), self_confidence=float(probs[i, given])))
    return LabelIssueReport(issues=issues, num_images=len(labels), folds=folds_for(labels))


def run_features(run: Run, ds: Dataset, workspace: Workspace, progress: ProgressFn | None = None,
                 device: str = "cpu") -> np.ndarray:
    """Eval-view features [N, D] of every record of ``ds`` through ``run``'s best body, in record
    order, keyed and stored as the trainer's (one key per split of the run's config), so a
    frozen-backbone run's stored features are read back rather than computed again."""
    import torch

    from tl_core.data.split import make_split
    from tl_core.device import autocast_dtype, select_device
    from tl_core.model.features import (
        EVAL_VIEW,
        FeatureStore,
        extract_features,
        feature_key,
        feature_numerics,
        model_fingerprint,
    )
    from tl_core.model.loading import load_model
    from tl_core.model.preprocess import Normalizer, decode_dataset, eval_view, make_loader
    from tl_core.model.registry import get_backbone
    from tl_core.workspace import cache_dir_for

    report = progress or (lambda done, total, message="": None)
    config = run.config
    spec = get_backbone(config.model.backbone)
    torch_device = select_device(device)
    amp_dtype = autocast_dtype(torch_device, config.train.amp)
    model = load_model(run, "best", map_location=torch_device)
    model.eval()
    body = model.body.to(torch_device)
    split = make_split(ds, config.data.val_fraction, config.data.test_fraction, config.data.split_seed)
    groups = [list(g) for g in (split.train, split.val, split.test) if g]
    covered = {i for g in groups for i in g}
    rest = [i for i in range(len(ds.records)) if i not in covered]  # make_split places every record; in case
    groups += [rest] if rest else []
    ids = [r.sha256 for r in ds.records]
    cache_dir = cache_dir_for(ds.root, workspace)
    store = FeatureStore(cache_dir / "features") if all(ids) else None
    fingerprint = model_fingerprint(config.model.backbone, config.model.pretrained, body) if store else ""
    numerics = feature_numerics(torch_device, amp_dtype, config.train, EVAL_VIEW)
    keys = [feature_key(fingerprint, spec.preprocess, [ids[i] for i in g], EVAL_VIEW, numerics) if store else ""
            for g in groups]
    found = [store.load(key, len(g)) if store else None for key, g in zip(keys, groups, strict=True)]
    todo = sum(len(g) for g, f in zip(groups, found, strict=True) if f is None)
    images = None
    if todo:
        report(0, len(ds.records), "reading the images")
        images = decode_dataset(ds, spec.preprocess, cache_dir,
                                progress=lambda done, total, message="": report(done, total, "reading the images"))
    normalize = Normalizer.for_preprocess(spec.preprocess, torch_device)
    batch, done = max(1, min(config.train.batch_size, 64)), 0
    out: np.ndarray | None = None
    for g, key, feats in zip(groups, keys, found, strict=True):
        if feats is None:
            loader = make_loader(images, g, [ds.labels[i] for i in g], eval_view(spec.preprocess), batch, shuffle=False)
            start = done

            def on_batch(batches: int, _total: int, start: int = start, size: int = len(g)) -> None:
                report(min(start + batches * batch, start + size), todo, "running the backbone over the images")
            with torch.inference_mode():
                feats, _ = extract_features(body, loader, normalize, amp_dtype, on_batch)
            done += len(g)
            if store:
                store.save(key, feats)  # False on a full disk: the list is still computed, only not kept
        if out is None:
            out = np.zeros((len(ds.records), feats.shape[1]), dtype=np.float32)
        out[g] = feats.numpy()
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def find_for_run(run: Run, workspace: Workspace, progress: ProgressFn | None = None,
                 seed: int | None = None) -> LabelIssueReport:
    """The likely mislabelled images of the dataset ``run`` trained on, as it is now (a relabel
    since the run counts), judged on ``run``'s backbone features."""
    from tl_core.data.dataset import Dataset

    folder = run.dataset_dir()
    if folder is None or not (folder / "dataset.json").is_file():
        raise DataError("The dataset this run trained on is no longer here; pick a run on an existing dataset.")
    ds = Dataset.load(folder)
    folds_for(ds.labels)  # before any backbone pass: a class too small fails at once
    features = run_features(run, ds, workspace, progress)
    if progress:
        progress(0, 1, "comparing each image with a model trained on the others")
    result = label_issues(ds, features, run.config.train.seed if seed is None else seed)
    if progress:
        progress(1, 1, "done")
    return result


__all__ = ["METHOD", "LabelIssue", "LabelIssueReport", "find_for_run", "find_issues", "folds_for", "label_issues",
           "out_of_fold_probs", "run_features"]
