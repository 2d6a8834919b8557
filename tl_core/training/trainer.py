"""The trainer: from a RunConfig and a run folder to trained checkpoints and an evaluation.

It emits typed events (``tl_core.events``) to subscribers; the run log, the CLI progress bar
and the app's live curves are all subscribers. ``train_step`` is separate from the loop so it
can be tested on a tiny model.

The pieces, in the order a run meets them:

- ``train_session.open_session``: data, device and model, set up once (``Session``);
- a strategy: ``EpochLoop`` (epochs of ``train_step``, on images or on cached backbone features,
  see ``tl_core.model.features``) or ``ClassicalHead`` (a scikit-learn head fitted once on features);
- ``checkpoints``: what the run has learnt so far (``TrainState``), saved and resumed;
- ``Strategy.final_evaluation``: the best checkpoint on the validation and test images;
- ``Trainer.fit``: the run's life, the same for both strategies: finished, cancelled or failed,
  each written to the run folder through the ``Run``'s typed methods (``tl_core.runs``).

How an image becomes the model's input is ``tl_core.model.preprocess``; device, seed and precision
helpers are ``tl_core.device``.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tl_core import atomic
from tl_core import events as ev
from tl_core.config import RunConfig
from tl_core.device import autocast, describe_device, is_out_of_memory
from tl_core.errors import TLError, TrainingOutOfMemory
from tl_core.model.features import EVAL_VIEW, FeatureView, extract_features, train_feature_view
from tl_core.model.optim import make_optimizer, make_scheduler
from tl_core.runs import Run
from tl_core.training import trackers
from tl_core.training.balance import class_weights, sample_weights
from tl_core.training.checkpoints import TrainState, load_best, resume_from_last, save_checkpoint
from tl_core.training.progress import PhaseProgress, RateWindow
from tl_core.training.session import PreparedData, Session, open_session
from tl_core.workspace import Workspace

if TYPE_CHECKING:
    from tl_core.training.distributed import Group


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------
def train_step(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
               optimizer: torch.optim.Optimizer, loss_fn: Callable, *,
               scaler: torch.amp.GradScaler | None = None,
               amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns the (detached) loss and the number of correct predictions."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(inputs.device, amp_dtype):
        logits = model(inputs)
        loss = loss_fn(logits.float(), labels)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    correct = (logits.argmax(1) == labels).sum()
    return loss.detach(), correct


# --------------------------------------------------------------------------------------------
# Strategies: how a session's model is trained
# --------------------------------------------------------------------------------------------
class _Stopped(Exception):
    """The control asked the run to stop; raised between batches and reported as a cancel."""


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class Optimisation:
    """The gradient side of a run; the schedule is rebuilt when the batch size is halved."""

    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler, stepped once per batch
    loss_fn: nn.Module
    scaler: torch.amp.GradScaler | None  # fp16 only; bf16 and fp32 need none
    base_lrs: list[float]  # each group's learning rate before any schedule step
    total_steps: int  # the schedule's length in batches


def make_optimisation(session: Session) -> Optimisation:
    from tl_core.model.freeze import param_groups

    train = session.config.train
    optimizer = make_optimizer(train.optimizer, param_groups(session.model, session.config.freeze, train.lr),
                               train.lr, train.weight_decay)
    total_steps = math.ceil(len(session.data.train) / train.batch_size) * train.epochs
    weight = None
    if train.balance == "weighted_loss":  # the training loss only: validation stays unweighted (tl_core.training.balance)
        weight = torch.from_numpy(class_weights(session.data.labels_of(session.data.train),
                                                len(session.data.classes))).to(session.device)
    return Optimisation(
        optimizer=optimizer, scheduler=make_scheduler(train.schedule, optimizer, total_steps),
        loss_fn=nn.CrossEntropyLoss(weight=weight, label_smoothing=train.label_smoothing),
        scaler=torch.amp.GradScaler("cuda") if session.amp_dtype == torch.float16 else None,
        base_lrs=[group["lr"] for group in optimizer.param_groups], total_steps=total_steps)


class Strategy:
    """One way to train a session's model; the pieces both ways share (features, validation,
    checkpoints, final evaluation). ``train`` returns the final evaluation's result."""

    def __init__(self, trainer: Trainer, session: Session, optim: Optimisation | None = None) -> None:
        self.trainer, self.session, self.optim = trainer, session, optim
        self.state: TrainState = trainer.state
        self.emit, self.check_stop = trainer.emit, trainer.check_stop
        self._said_loaded = self._said_unstored = False  # each note about the feature store once a run

    def train(self) -> dict[str, Any]:
        raise NotImplementedError

    def started(self, epochs: int, steps_per_epoch: int, trainable: int, feature_cache: bool,
                feature_views: int = 0) -> None:
        s = self.session
        self.emit(ev.RunStarted(
            run_id=self.trainer.run.id, device=describe_device(s.device) + (
                f" x {s.group.world} processes" if s.group else ""), classes=s.data.classes,
            num_train=len(s.data.train), num_val=len(s.data.val), epochs=epochs, steps_per_epoch=steps_per_epoch,
            trainable_params=trainable, total_params=sum(p.numel() for p in s.model.parameters()),
            feature_cache=feature_cache, feature_views=feature_views))

    def features(self, requests: Sequence[tuple[Sequence[int], FeatureView]]) -> list[torch.Tensor]:
        """The body's features of each (images, view) asked for: from the workspace's feature store
        when a run with the same images, body, preprocessing and view computed them, else computed
        here (one progress bar over all of them, images/s and time left over a sliding window) and
        stored for the next run."""
        s = self.session
        images = [s.feature_images(indices) for indices, _ in requests]  # a share: the whole set's rows
        requests = [(computed, view) for (computed, _), (_, view) in zip(images, requests, strict=True)]
        store = s.feature_store
        keys = [s.feature_key(indices, view) if store else "" for indices, view in requests]
        out = [store.load(key, len(indices)) if store else None
               for key, (indices, _) in zip(keys, requests, strict=True)]
        if s.group is not None and store:  # every rank computes what any rank did not find (in step)
            found = s.group.sum([f is not None for f in out])
            out = [f if hits == s.group.world else None for f, hits in zip(out, found, strict=True)]
        if any(f is not None for f in out) and not self._said_loaded:
            self._said_loaded = True
            self.emit(ev.Note("Backbone features loaded from the cache: an earlier run computed them for the "
                              "same images, backbone, preprocessing and view."))
        todo = [i for i, f in enumerate(out) if f is None]
        if todo:
            progress = PhaseProgress(self.emit, "features", sum(len(requests[i][0]) for i in todo),
                                     "computing backbone features")
            progress.start()
            for i in todo:
                out[i] = self._extract(*requests[i], progress)
                if s.group is not None and not s.group.is_main:
                    continue  # rank 0 stores them
                if store and not store.save(keys[i], out[i]) and not self._said_unstored:
                    self._said_unstored = True
                    self.emit(ev.Note("Could not store the backbone features for later runs (is the disk "
                                      "full?); this run carries on without."))
        return [f if rows is None else f[rows] for f, (_, rows) in zip(out, images, strict=True)]

    def _extract(self, indices: Sequence[int], view: FeatureView, progress: PhaseProgress) -> torch.Tensor:
        """One view's features at the current batch size. The view's crops are drawn from its own
        seed in a forked random state: the same whenever they are computed, and whether or not
        they are (the run's random numbers after this do not depend on a cache hit)."""
        s, group = self.session, self.session.group
        batch, counted = s.config.train.batch_size, [0]
        mine = indices if group is None else group.shard(indices)  # several ranks: each its shard
        ranks = 1 if group is None else group.world

        def on_batch(done_batches: int, _total: int) -> None:
            done = min(done_batches * batch * ranks, len(indices))
            progress.advance(done - counted[0])
            counted[0] = done
            self.check_stop()
        if not mine:  # fewer images than ranks: this one has none
            feats, batches = torch.zeros((0, self._feature_width())), 0
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(view.torch_seed())
                loader = s.feature_loader(mine, view)
                feats, _ = extract_features(s.model.body, loader, s.normalize, s.amp_dtype, on_batch)
            batches = len(loader)
        if group is None:
            return feats
        # a shorter shard has one batch less: its rank still takes part in every stop check
        for _ in range(math.ceil(math.ceil(len(indices) / ranks) / batch) - batches):
            self.check_stop()
        return group.gather_rows(feats, len(indices))

    def _feature_width(self) -> int:
        """The body's feature size (for a rank whose shard is empty): the head's first Linear's input."""
        return next(m for m in self.session.model.head.modules() if isinstance(m, nn.Linear)).in_features

    @torch.no_grad()
    def image_logits(self, indices: Sequence[int], shared: bool = False) -> torch.Tensor:
        """Logits of the eval view of these images; ``shared``: every rank computes its shard and
        all get all of them (a collective: every rank calls it)."""
        s = self.session
        s.model.eval()
        group = s.group if shared else None
        out = []
        for x, _ in s.loader(indices if group is None else group.shard(indices), s.eval_view(), shuffle=False):
            with autocast(s.device, s.amp_dtype):
                out.append(s.model(s.normalize(x)).float().cpu())
        logits = torch.cat(out) if out else torch.zeros(0, len(s.data.classes))
        return logits if group is None else group.gather_rows(logits, len(indices))

    @torch.no_grad()
    def val_logits(self, shared: bool = False) -> torch.Tensor:
        """The validation set's logits: from its cached features when the run has them."""
        s = self.session
        if s.features.val is None:
            return self.image_logits(s.data.val, shared=shared)
        s.model.eval()
        return self.head_logits(s.features.val)

    @torch.no_grad()
    def head_logits(self, features: torch.Tensor, rows: int = 1024) -> torch.Tensor:
        """The head's logits of cached features, ``rows`` at a time: a knn head compares each row
        with every training image, so all of them at once could fill the memory."""
        head = self.session.model.head
        head.eval()
        out = [head(features[i:i + rows].to(self.session.device)).float().cpu() for i in range(0, len(features), rows)]
        return torch.cat(out) if out else torch.zeros(0, len(self.session.data.classes))

    def validate(self) -> tuple[float, float]:
        """The validation loss and accuracy, the same on every rank."""
        logits = self.val_logits(shared=True)
        labels = torch.tensor(self.session.data.labels_of(self.session.data.val))
        return nn.functional.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()

    def save(self, kind: str, epoch: int) -> None:
        s, optim = self.session, self.optim
        if s.group is not None and not s.group.is_main:
            return  # rank 0 writes the checkpoints
        path = save_checkpoint(self.trainer.run, kind, epoch, s.model, self.state, s.config.train.batch_size,
                               optimizer=optim.optimizer if optim else None,
                               scheduler=optim.scheduler if optim else None)
        self.emit(ev.CheckpointSaved(epoch=epoch, kind=kind, path=str(path), metric=self.state.best_metric))

    def final_evaluation(self) -> dict[str, Any]:
        """Evaluate the best checkpoint on val (and test); the reports go to the run folder."""
        from tl_core.evaluation.metrics import evaluate_logits

        s = self.session
        result: dict[str, Any] = {"best_epoch": self.state.best_epoch, "history": self.state.history}
        if s.group is not None and not s.group.is_main:
            return result  # rank 0 evaluates alone (no collectives from here on)
        load_best(self.trainer.run, s.model, s.device)
        for name, indices in {"val": s.data.val, "test": s.data.test}.items():
            if indices:
                logits = self.val_logits() if name == "val" else self.image_logits(indices)
                report = evaluate_logits(logits, s.data.labels_of(indices), s.data.classes,
                                         [s.data.paths[i] for i in indices])
                self.trainer.run.write_evaluation(name, report)
                result[name] = report.summary()
        self.trainer.run.write_metrics(result)
        return result


class EpochLoop(Strategy):
    """Epochs of gradient steps: on images, or on cached features when the body stays frozen."""

    def __init__(self, trainer: Trainer, session: Session) -> None:
        super().__init__(trainer, session, make_optimisation(session))
        self._wrapped: tuple[tuple, nn.Module] | None = None  # several ranks: the DDP wrapper in use

    def _trainable(self, module: nn.Module) -> nn.Module:
        """``module``, DDP-wrapped when several ranks train it; wrapped again when the parameters
        that train change (gradual unfreezing, LP-FT: DDP syncs the ones it was built with)."""
        group = self.session.group
        if group is None:
            return module
        key = (id(module), tuple(p.requires_grad for p in module.parameters()),
               tuple(m.training for m in module.modules()))
        if self._wrapped is None or self._wrapped[0] != key:
            if self._wrapped is not None:  # the old wrapper's gradient hooks go before the new one's come
                self._wrapped = None
                gc.collect()
            self._wrapped = (key, group.wrap(module))
        return self._wrapped[1]

    def train(self) -> dict[str, Any]:
        """Resume when asked, run the epochs, stop early when the monitored metric stalls."""
        from tl_core.model.freeze import apply_freeze

        s, state, settings = self.session, self.state, self.session.config.train
        start_epoch = (resume_from_last(self.trainer.run, s.model, self.optim.optimizer, self.optim.scheduler,
                                        state, s.device) if self.trainer.resume else 0) + 1
        if start_epoch > 1:
            self.emit(ev.Note(f"Resumed after epoch {start_epoch - 1}."))
        self.started(settings.epochs, math.ceil(len(s.data.train) / settings.batch_size),
                     trainable_params(s.model), s.use_cache, s.features.n_views if s.use_cache else 0)
        stopped_early, epochs_without_gain = False, 0
        for epoch in range(start_epoch, settings.epochs + 1):
            self.check_stop()
            t0 = time.perf_counter()
            apply_freeze(s.model, s.config.freeze, epoch=epoch)
            train_loss, train_acc, val_loss, val_acc = self._epoch_with_oom_retry(epoch)
            seconds = time.perf_counter() - t0
            state.history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                  "val_loss": val_loss, "val_acc": val_acc, "seconds": seconds})
            self.emit(ev.EpochEnded(epoch, train_loss, train_acc, val_loss, val_acc,
                                    self.optim.optimizer.param_groups[-1]["lr"], seconds, trainable_params(s.model)))
            if state.is_better(settings.monitor, val_loss, val_acc):
                state.record_best(settings.monitor, epoch, val_loss, val_acc)
                epochs_without_gain = 0
                self.save("best", epoch)
            else:
                epochs_without_gain += 1
            self.save("last", epoch)
            self.trainer.run.record_epoch(epoch, state.best_epoch, state.best_val_acc())
            patience = settings.early_stopping_patience
            if patience and epochs_without_gain >= patience:
                stopped_early = True
                self.emit(ev.Note(f"Stopped early: {settings.monitor} did not improve for {patience} epochs."))
                break
        result = self.final_evaluation()
        result["stopped_early"] = stopped_early
        return result

    def _epoch_with_oom_retry(self, epoch: int) -> tuple[float, float, float, float]:
        """One training epoch and its validation; on out-of-memory, halve the batch and run the
        epoch again (the abandoned attempt's steps are taken back)."""
        step_at_start = self.state.global_step
        while True:
            try:
                train_loss, train_acc = self._cached_epoch(epoch) if self.session.use_cache else self._image_epoch(epoch)
                return (train_loss, train_acc, *self.validate())
            except Exception as exc:
                if not is_out_of_memory(exc) or self.session.config.train.batch_size <= 1 or self.session.group:
                    raise  # several ranks: one rank's smaller batch would put them out of step
                self._halve_batch(epoch, step_at_start)

    def _halve_batch(self, epoch: int, step_at_start: int) -> None:
        """Halve the batch and rebuild the schedule for the new number of steps, at the same
        point of the run (the learning rate does not jump or end early)."""
        s, optim = self.session, self.optim
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
        new = max(1, s.config.train.batch_size // 2)
        s.with_batch_size(new)
        done = step_at_start / max(optim.total_steps, 1)  # the share of the run behind us
        optim.total_steps = math.ceil(len(s.data.train) / new) * s.config.train.epochs
        for group, base in zip(optim.optimizer.param_groups, optim.base_lrs, strict=True):
            group["lr"] = base
        optim.scheduler = make_scheduler(s.config.train.schedule, optim.optimizer, optim.total_steps)
        self.state.global_step = round(done * optim.total_steps)
        for _ in range(self.state.global_step):
            optim.scheduler.step()
        self.emit(ev.Note(f"Out of memory: retrying epoch {epoch} with batch size {new}."))

    def _image_epoch(self, epoch: int) -> tuple[float, float]:
        from tl_core.model.freeze import set_train_mode

        s = self.session
        set_train_mode(s.model, s.config.freeze, epoch=epoch)
        loader = s.loader(s.data.train, s.train_view(), shuffle=True, epoch=epoch,
                          balanced=s.config.train.balance == "sampler")
        return self._run_batches(epoch, loader, len(loader), self._trainable(s.model), prepare=s.normalize)

    def _cached_epoch(self, epoch: int) -> tuple[float, float]:
        from tl_core.model.freeze import set_train_mode

        s = self.session
        feats = self._train_features(epoch).to(s.device)
        set_train_mode(s.model, s.config.freeze, epoch=epoch)
        labels = torch.tensor(s.data.labels_of(s.data.train), device=s.device)
        g = torch.Generator().manual_seed(s.config.train.seed + epoch)
        if s.config.train.balance == "sampler":  # as the image path's WeightedRandomSampler: same length, with replacement
            weights = torch.from_numpy(sample_weights(s.data.labels_of(s.data.train), len(s.data.classes)))
            order = torch.multinomial(weights, len(labels), replacement=True, generator=g).to(s.device)
        else:
            order = torch.randperm(len(labels), generator=g).to(s.device)
        bs = s.config.train.batch_size
        batches = ((feats[order[i:i + bs]], labels[order[i:i + bs]]) for i in range(0, len(order), bs))
        return self._run_batches(epoch, batches, math.ceil(len(order) / bs), self._trainable(s.model.head))

    def _train_features(self, epoch: int) -> torch.Tensor:
        """The training view epoch ``epoch`` trains on, computed (or loaded) the first time an
        epoch needs it, with the validation set's features the first time: epoch 1 waits for one
        pass of the backbone, not one per view."""
        s, cache = self.session, self.session.features
        view = cache.view_of(epoch)
        wanted: dict[str, tuple[Sequence[int], FeatureView]] = {}
        if view not in cache.train_views:
            wanted["train"] = (s.data.train, train_feature_view(s.config.data.augment, view, s.config.train.seed))
        if cache.val is None:
            wanted["val"] = (s.data.val, EVAL_VIEW)
        for name, feats in zip(wanted, self.features(list(wanted.values())), strict=True):
            if name == "train":
                cache.train_views[view] = feats
            else:
                cache.val = feats
        return cache.train_views[view]

    def _run_batches(self, epoch: int, batches: Iterable, steps: int, model: nn.Module,
                     prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> tuple[float, float]:
        """Train on ``batches`` of (inputs, labels), each input ``prepare``d first; several ranks
        each train on their shard of every batch (``tl_core.training.distributed``)."""
        s, optim, state, group = self.session, self.optim, self.state, self.session.group
        total_loss = torch.zeros((), device=s.device)
        total_correct = torch.zeros((), device=s.device)
        seen = 0
        rate = RateWindow()  # images/s over the last seconds: per batch it swings with every hiccup
        rate.add(0)
        for step, (x, y) in enumerate(batches, start=1):
            y = torch.as_tensor(y)
            if group is not None:
                loss, correct, n = self._shard_step(model, prepare, x, y, group)
            else:
                y = y.to(s.device, non_blocking=True)
                loss, correct = train_step(model, prepare(x), y, optim.optimizer, optim.loss_fn,
                                           scaler=optim.scaler, amp_dtype=s.amp_dtype)
                n = y.shape[0]
            if state.global_step < optim.total_steps:  # OneCycle refuses to step past its end
                optim.scheduler.step()
            state.global_step += 1
            seen += n
            total_loss += loss * n
            total_correct += correct
            rate.add(seen)
            self.emit(ev.BatchEnded(epoch=epoch, step=step, steps=steps, global_step=state.global_step,
                                    loss=float(loss), accuracy=float(correct) / n,
                                    lr=optim.optimizer.param_groups[-1]["lr"],
                                    images_per_s=rate.rate() or 0.0))
            self.check_stop()
        if group is not None:
            group.sync_buffers(s.model)
        return float(total_loss) / max(seen, 1), float(total_correct) / max(seen, 1)

    def _shard_step(self, model: nn.Module, prepare: Callable[[torch.Tensor], torch.Tensor],
                    x: torch.Tensor, y: torch.Tensor, group: Group) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One step on this rank's shard of a global batch; returns the batch's (mean loss,
        correct, size) over all ranks. Each rank's summed loss is scaled by world / batch size:
        DDP's mean of the ranks' gradients is then the whole batch's mean-loss gradient, exactly
        as one process computes it, whatever the shards' sizes. With a weighted loss, "size" is the
        batch's summed class weights (PyTorch's weighted mean)."""
        s, optim = self.session, self.optim
        n = y.shape[0]
        weight = optim.loss_fn.weight  # a weighted loss's class weights (TrainConfig.balance), else None
        # What the whole batch's mean divides by: its size, or (weighted) its images' summed class weights
        total = n if weight is None else float(weight.cpu()[y].sum())
        x, y = group.shard_batch(x, y)
        summed = nn.CrossEntropyLoss(weight=weight, label_smoothing=s.config.train.label_smoothing, reduction="sum")
        loss, correct = train_step(model, prepare(x.to(s.device)), y.to(s.device),
                                   optim.optimizer, lambda logits, labels: summed(logits, labels) * (group.world / total),
                                   scaler=optim.scaler, amp_dtype=s.amp_dtype)
        loss_sum, correct_sum, _ = group.sum([float(loss) * total / group.world, float(correct), y.shape[0]])
        return torch.tensor(loss_sum / total, device=s.device), torch.tensor(correct_sum, device=s.device), n


class ClassicalHead(Strategy):
    """A scikit-learn head (logistic regression, linear SVM, LDA, nearest class mean, k nearest
    neighbours) fitted once on the body's features, recorded as a run of one epoch."""

    def fit(self, train_feats: torch.Tensor, y: list[int]) -> tuple[nn.Module, int]:
        """The head, and how many of its numbers were learnt from the training images."""
        from tl_core.model.classical import fit_classical

        s = self.session
        head_config = s.config.model.head
        head = fit_classical(head_config.kind, train_feats.numpy(), np.asarray(y), len(s.data.classes),
                             seed=s.config.train.seed, balanced=s.config.train.balance != "none",
                             neighbours=head_config.neighbours)
        return head, sum(t.numel() for t in head.state_dict().values())

    def train(self) -> dict[str, Any]:
        s, state = self.session, self.state
        self.started(epochs=1, steps_per_epoch=1, trainable=0, feature_cache=True)
        t0 = time.perf_counter()
        train_feats, s.features.val = self.features([(s.data.train, EVAL_VIEW), (s.data.val, EVAL_VIEW)])
        y = s.data.labels_of(s.data.train)
        head, learnt = self.fit(train_feats, y)
        s.model.head = head.to(s.device)
        train_logits = self.head_logits(train_feats)
        y_t = torch.tensor(y)
        train_loss = nn.functional.cross_entropy(train_logits, y_t).item()
        train_acc = (train_logits.argmax(1) == y_t).float().mean().item()
        val_loss, val_acc = self.validate()
        state.history.append({"epoch": 1, "train_loss": train_loss, "train_acc": train_acc,
                              "val_loss": val_loss, "val_acc": val_acc})
        self.emit(ev.EpochEnded(1, train_loss, train_acc, val_loss, val_acc, 0.0,
                                time.perf_counter() - t0, learnt))
        state.best_epoch = 1
        self.save("best", 1)
        self.save("last", 1)
        return self.final_evaluation()


class ZeroShot(ClassicalHead):
    """The zero-shot head with 0 epochs: the class names' text embeddings classify the images and
    nothing is learnt from them. Recorded as one pass, so the run reads as any other."""

    def fit(self, train_feats: torch.Tensor, y: list[int]) -> tuple[nn.Module, int]:
        self.emit(ev.Note("Zero-shot: no training image was used. The training accuracy is how well the class "
                          "names alone sort the training images."))
        return self.session.model.head, 0


# --------------------------------------------------------------------------------------------
# The run's life
# --------------------------------------------------------------------------------------------
class Trainer:
    """Trains one run: sets up a session, hands it to a strategy and sees the run to its end
    (finished, cancelled or failed), the same way for every strategy. Use ``train()`` unless you
    need the pieces."""

    def __init__(self, config: RunConfig, run: Run, workspace: Workspace,
                 subscribers: Sequence[ev.Subscriber] = (), control: ev.Control | None = None,
                 resume: bool = False, group: Group | None = None) -> None:
        config.validate()
        self.config, self.run, self.workspace, self.resume = config, run, workspace, resume
        self.group = group  # several ranks train the run (``run`` is read-only on all but rank 0)
        # TensorBoard and MLflow when set up (tl_core.training.trackers): every run, from the app, a worker or the
        # CLI; with several ranks only rank 0's, or each rank would log the run again
        tracked = trackers.for_run(run) if group is None or group.is_main else []
        self.subscribers = [run.append_event, *subscribers, *tracked]
        self.control = control or ev.Control(poll=run.stop_requested)
        self.state = TrainState()

    def emit(self, event: ev.Event) -> None:
        for subscriber in self.subscribers:
            subscriber(event)

    def check_stop(self) -> None:
        """Raise _Stopped when the run is asked to stop; with several ranks, rank 0's answer for all
        (every rank calls it at the same points)."""
        if self.group is None:
            stop = self.control.should_stop
        else:
            stop = self.group.stop_requested(lambda: self.control.should_stop)
        if stop:
            raise _Stopped()

    def fit(self) -> dict[str, Any]:
        run, state = self.run, self.state
        if self.group is None:  # several ranks: their worker recorded itself (tl_core.jobs.worker)
            run.mark_running(pid=os.getpid())

        config, group = self.config, self.group

        def data_ready(data: PreparedData) -> None:
            run.write_classes(data.classes)
            run.record_dataset(data.dataset_dir)
            if group is not None and group.is_main:
                group.barrier()  # the dataset is imported and decoded: the other ranks read it now
        strategy: Strategy | None = None
        try:
            try:
                if group is not None and not group.is_main:
                    group.barrier()  # rank 0 imports and decodes the dataset (its folders, its caches)
                    dataset_dir = run.status().dataset_dir
                    if dataset_dir:
                        config = dataclasses.replace(config, data=dataclasses.replace(
                            config.data, dataset_dir=dataset_dir))
                session = open_session(config, self.workspace, self.emit, data_ready=data_ready)
                session.group = self.group
                strategy = (ClassicalHead(self, session) if session.classical else
                            ZeroShot(self, session) if session.zero_shot_only else EpochLoop(self, session))
                result = strategy.train()
            except _Stopped:
                if strategy is not None and state.best_epoch is not None:  # results first, so a reader of "cancelled" finds them
                    strategy.final_evaluation()
                run.mark_cancelled(best_epoch=state.best_epoch, best_val_acc=state.best_val_acc())
                self._emit_final(ev.RunCancelled(epoch=len(state.history), best_epoch=state.best_epoch))
                return {"state": "cancelled", "best_epoch": state.best_epoch}
            run.mark_finished(best_epoch=state.best_epoch, best_val_acc=result.get("val", {}).get("accuracy"))
            # The status says finished now (or cancelled, above): a log the disk refuses this
            # line must not undo that.
            self._emit_final(ev.RunFinished(best_epoch=state.best_epoch or 0, metrics=result,
                                            stopped_early=result.get("stopped_early", False)))
            return result
        except TLError as exc:
            self._fail(str(exc), exc)
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                msg = ("The device ran out of memory. Lower the batch size, pick a smaller backbone "
                       "(e.g. mobilenet_v3_small) or freeze more layers.")
                self._fail(msg, exc)
                raise TrainingOutOfMemory(msg) from exc
            if atomic.is_disk_full(exc):  # torch.save outside atomic, a library's own write, ...
                full = atomic.disk_full(exc)
                self._fail(str(full), full)
                raise full from exc
            self._fail(f"Training failed unexpectedly: {type(exc).__name__}: {exc}", exc)
            raise

    def _fail(self, reason: str, exc: BaseException) -> None:
        """Record the failure as far as the disk allows; never raises (the caller re-raises the
        error that ended the run, not one from reporting it)."""
        try:
            reason += self.run.best_kept_note()
        except OSError:
            pass
        self.run.mark_failed(reason)  # never raises; the RunFailed event goes out below, to every subscriber
        try:
            self._emit_final(ev.RunFailed(reason=reason, error_type=type(exc).__name__))
        except Exception:  # noqa: BLE001 - a subscriber's bug must not hide the error that ended the run
            pass

    def _emit_final(self, event: ev.Event) -> None:
        """``emit`` for the run's last event: every subscriber gets it even when the run log (first
        in line) cannot be written on a full disk."""
        for subscriber in self.subscribers:
            try:
                subscriber(event)
            except OSError:  # DiskFull: the status, written before, is what readers go by
                pass


def train(config: RunConfig, run: Run, workspace: Workspace, subscribers: Sequence[ev.Subscriber] = (),
          control: ev.Control | None = None, resume: bool = False, group: Group | None = None) -> dict[str, Any]:
    """Train ``run`` as ``config`` says; events go to the run log and ``subscribers``. ``group``:
    this process is one rank of several (``tl_core.jobs.worker_rank``)."""
    return Trainer(config, run, workspace, subscribers, control, resume=resume, group=group).fit()
