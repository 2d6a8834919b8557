"""Setting up a training session: the dataset decoded and split, the model built and frozen, on
the chosen device. ``open_session`` builds a ``Session`` in one go. After that, a run changes only
its batch size (halved when a batch does not fit in memory), its feature cache and the model's
weights.

A session that trains on frozen features has a ``FeatureStore`` in the workspace's cache folder
(a dataset the teacher shared: the class's shared cache, so it is decoded once for everyone),
shared by every run there: ``Session.feature_key`` names what a view's features depend on. A run
on a share of the training images (``DataConfig.train_fraction``, the data-size sweep) trains on
rows of the whole training set's features (``Session.feature_images``): every share of a sweep
is served by one backbone pass over the training images, in whichever order the members run."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from tl_core import events as ev
from tl_core.config import CLASSICAL_HEADS, ZERO_SHOT_HEAD, RunConfig, feature_views
from tl_core.device import autocast_dtype, seed_everything, select_device
from tl_core.errors import ConfigError
from tl_core.model.features import (
    EvalBatches,
    FeatureCache,
    FeatureStore,
    FeatureView,
    feature_key,
    feature_numerics,
    model_fingerprint,
)
from tl_core.model.preprocess import Normalizer, View, decode_dataset, eval_view, make_loader, train_view
from tl_core.model.zero_shot import zero_shot_head
from tl_core.training.balance import sample_weights
from tl_core.workspace import Workspace, cache_dir_for

if TYPE_CHECKING:
    from tl_core.model.registry import Preprocess
    from tl_core.training.distributed import Group


# --------------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------------
@dataclass
class PreparedData:
    classes: list[str]
    paths: list[str]  # record paths, for per-image predictions
    images: torch.Tensor  # uint8 [N,3,S,S] (S = the weights' resize size), maybe memory-mapped
    labels: list[int]
    train: list[int]
    val: list[int]
    test: list[int]
    dataset_dir: str
    image_ids: list[str] = field(default_factory=list)  # each record's content hash; keys the feature store
    # The split's training images before ``train_fraction`` took its share (empty: ``train`` itself);
    # a share's features are rows of theirs.
    train_pool: list[int] = field(default_factory=list)

    def labels_of(self, indices: Sequence[int]) -> list[int]:
        return [self.labels[i] for i in indices]


def load_dataset(config: RunConfig, workspace: Workspace, progress=None):
    from tl_core.data.dataset import Dataset
    from tl_core.data.fixes import at_version
    from tl_core.data.ingest import ingest

    if config.data.dataset_dir:
        # A fix made while the run waited in the queue is a new version: the run trains on the one it recorded.
        version = config.data.dataset_version
        if type(version) is int and version > 0:  # a config file (an opened project's) may say anything
            recorded = at_version(config.data.dataset_dir, version)
            if recorded is not None:
                return recorded
        return Dataset.load(config.data.dataset_dir)
    return ingest(config.data.source, dest=workspace.datasets_dir / dataset_slug(config.data.source),
                  progress=progress)


def dataset_slug(source: str) -> str:
    import hashlib
    from pathlib import Path

    path = Path(source).expanduser().resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in path.stem)[:40] or "data"
    return f"{stem}-{digest}"


def throttled_progress(emit: Callable[[ev.Event], None], phase: str) -> Callable[..., None]:
    """A progress callback that emits at most two ``Progress`` events a second (and the last)."""
    last = [0.0]

    def report(done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.5:
            last[0] = now
            emit(ev.Progress(phase, done, total, message))
    return report


def prepare_data(config: RunConfig, workspace: Workspace, preprocess: Preprocess,
                 emit: Callable[[ev.Event], None] = lambda e: None) -> PreparedData:
    from tl_core.data.health import check_trainable
    from tl_core.data.split import make_split, subset_per_class

    ds = load_dataset(config, workspace, progress=throttled_progress(emit, "ingest"))
    check_trainable(ds)
    split = make_split(ds, config.data.val_fraction, config.data.test_fraction, config.data.split_seed,
                       keep_given=config.data.keep_given_split)
    if not split.val:
        raise ConfigError("Training needs a validation set: set a validation fraction above 0 "
                          "or give a val/ folder.")
    images = decode_dataset(ds, preprocess, cache_dir_for(ds.root, workspace),
                            progress=throttled_progress(emit, "decode"))
    labels = list(ds.labels)
    # After the split, so the validation and test images are the full run's whatever the share.
    train = subset_per_class(split.train, labels, config.data.train_fraction, config.data.split_seed)
    return PreparedData(classes=list(ds.classes), paths=[r.path for r in ds.records], images=images,
                        labels=labels, train=train, val=list(split.val),
                        test=list(split.test), dataset_dir=str(ds.root),
                        image_ids=[r.sha256 for r in ds.records], train_pool=list(split.train))


# --------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------
@dataclass
class Session:
    """What one run trains with."""

    config: RunConfig  # the run's config; its batch size is halved when a batch does not fit
    preprocess: Preprocess  # the backbone's: how images become inputs (tl_core.model.preprocess)
    device: torch.device
    amp_dtype: torch.dtype | None  # mixed precision's dtype; None: full precision
    data: PreparedData
    model: nn.Module  # on ``device``, frozen as the plan says for epoch 1
    normalize: Normalizer
    use_cache: bool  # the body stays frozen throughout: the head trains on cached features
    features: FeatureCache = field(default_factory=FeatureCache)
    feature_store: FeatureStore | None = None  # features shared with other runs on disk; None: memory only
    model_fingerprint: str = ""  # of the frozen body (features.model_fingerprint), for ``feature_key``
    group: Group | None = None  # the ranks training this run together (tl_core.training.distributed); None: one process

    @property
    def zero_shot_only(self) -> bool:
        """The zero-shot head with 0 epochs: the class names' embeddings classify, nothing trains."""
        return self.config.model.head.kind == ZERO_SHOT_HEAD and self.config.train.epochs == 0

    @property
    def classical(self) -> bool:
        """A scikit-learn head fitted once on features, instead of epochs of gradient steps."""
        return self.config.model.head.kind in CLASSICAL_HEADS

    def eval_view(self) -> View:
        return eval_view(self.preprocess)

    def train_view(self) -> View:
        return train_view(self.preprocess, self.config.data.augment)

    def view_for(self, view: FeatureView) -> View:
        return self.eval_view() if view.is_eval else train_view(self.preprocess, view.augment)

    def feature_key(self, indices: Sequence[int], view: FeatureView) -> str:
        """What the features of these images in this view depend on (see ``features.feature_key``)."""
        numerics = feature_numerics(self.device, self.amp_dtype, self.config.train, view)
        if self.group is not None and not view.is_eval:  # each rank draws the crops of its own shard
            numerics += f"|ranks={self.group.world}"
        return feature_key(self.model_fingerprint, self.preprocess, [self.data.image_ids[i] for i in indices],
                           view, numerics)

    def feature_images(self, indices: Sequence[int]) -> tuple[Sequence[int], list[int] | None]:
        """The images whose features are computed (or loaded) for ``indices``, and the rows of
        ``indices`` among them (None: all of them, in order). A share of the training images gets
        the whole training set's: the same features whether or not another share or the full run
        stored them first (an augmented view draws its crops over the whole set), and one backbone
        pass serves every share of a sweep. A lone run on 5% computes the other 95% too, once."""
        pool = self.data.train_pool
        if not pool or list(indices) != self.data.train or self.data.train == pool:
            return indices, None
        row_of = {image: row for row, image in enumerate(pool)}
        return pool, [row_of[image] for image in indices]

    def loader(self, indices: Sequence[int], view: View, shuffle: bool, epoch: int = 0, balanced: bool = False):
        """Batches of (uint8 views, labels) at the current batch size; ``epoch`` seeds the shuffle.
        ``balanced``: a class-balanced draw instead of a shuffle (``TrainConfig.balance == "sampler"``)."""
        train = self.config.train
        labels = self.data.labels_of(indices)
        weights = sample_weights(labels, len(self.data.classes)).tolist() if balanced else None
        return make_loader(self.data.images, indices, labels, view, train.batch_size,
                           shuffle=shuffle, seed=train.seed + epoch, num_workers=train.num_workers,
                           pin_memory=self.device.type == "cuda", weights=weights)

    def feature_loader(self, indices: Sequence[int], view: FeatureView):
        """Batches of ``view`` of these images for feature extraction, in order: the eval view
        cropped a batch at a time (``features.EvalBatches``), an augmented one through ``loader``."""
        if view.is_eval and self.config.train.num_workers == 0:
            return EvalBatches(self.data.images, indices, self.data.labels_of(indices), self.eval_view(),
                               self.config.train.batch_size, pin_memory=self.device.type == "cuda")
        return self.loader(indices, self.view_for(view), shuffle=False, epoch=view.index)

    def with_batch_size(self, batch_size: int) -> None:
        self.config = dataclasses.replace(
            self.config, train=dataclasses.replace(self.config.train, batch_size=batch_size))


def auto_batch_config(config: RunConfig, model: nn.Module, preprocess: Preprocess, device: torch.device,
                      amp_dtype: torch.dtype | None, n_classes: int, n_train: int, workspace: Workspace,
                      emit: Callable[[ev.Event], None]) -> RunConfig:
    """``config`` with the automatic batch size (``tl_core.training.autobatch``); the choice is a Note."""
    from tl_core.training.autobatch import choose_batch_size

    choice = choose_batch_size(model, backbone=config.model.backbone, device=device, amp_dtype=amp_dtype,
                               crop_size=preprocess.crop_size, n_classes=n_classes, n_train=n_train,
                               configured=config.train.batch_size, cache_dir=workspace.cache_dir)
    emit(ev.Note(choice.note))
    return dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=choice.batch_size))


def open_session(config: RunConfig, workspace: Workspace, emit: Callable[[ev.Event], None],
                 data_ready: Callable[[PreparedData], None] = lambda data: None) -> Session:
    """Seed, pick the device, prepare the data (then call ``data_ready``), build and freeze the model."""
    from tl_core.model.freeze import apply_freeze, body_frozen_throughout
    from tl_core.model.registry import build_model, get_backbone

    seed_everything(config.train.seed)
    spec = get_backbone(config.model.backbone)
    device = select_device(config.train.device)
    amp_dtype = autocast_dtype(device, config.train.amp)
    data = prepare_data(config, workspace, spec.preprocess, emit)
    data_ready(data)

    model = build_model(config.model.backbone, len(data.classes), config.model.head,
                        pretrained=config.model.pretrained, weights_dir=config.model.weights_dir)
    if config.model.head.kind == ZERO_SHOT_HEAD:  # the head starts as the class names' text embeddings
        emit(ev.Note("Zero-shot head: embedding the class names with the text tower."))
        model.head = zero_shot_head(config.model.backbone, config.model.head, data.classes,
                                    pretrained=config.model.pretrained, weights_dir=config.model.weights_dir)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    normalize = Normalizer.for_preprocess(spec.preprocess, device)
    apply_freeze(model, config.freeze, epoch=1)
    if config.train.auto_batch:  # the model as epoch 1 trains it, before anything else takes GPU memory
        config = auto_batch_config(config, model, spec.preprocess, device, amp_dtype, len(data.classes),
                                   len(data.train), workspace, emit)
    use_cache = (config.train.feature_cache or config.model.head.kind in CLASSICAL_HEADS) and \
        body_frozen_throughout(config.freeze, model.group_names, config.train.epochs)
    session = Session(config=config, preprocess=spec.preprocess, device=device, amp_dtype=amp_dtype, data=data,
                      model=model, normalize=normalize, use_cache=use_cache,
                      features=FeatureCache(n_views=max(1, feature_views(config.data.augment, config.train.epochs))))
    if (use_cache or session.classical) and data.image_ids and all(data.image_ids):
        session.feature_store = FeatureStore(cache_dir_for(data.dataset_dir, workspace) / "features")
        session.model_fingerprint = model_fingerprint(config.model.backbone, config.model.pretrained, model.body)
    return session
