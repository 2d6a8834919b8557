"""The trainer: from a RunConfig and a run folder to trained checkpoints and an evaluation.

It emits typed events (``tl_core.events``) to subscribers; the run log, the CLI progress bar
and the app's live curves are all subscribers. ``train_step`` is separate from the loop so it
can be tested on a tiny model.

When the whole backbone stays frozen, the body's features are computed once (once per
augmented view when augmentation is on) and only the head trains on them: epochs after the
first then cost a tiny fraction of the first.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import events as ev
from .config import CLASSICAL_HEADS, RunConfig
from .errors import ConfigError, TLError, TrainingOutOfMemory
from .runs import Run
from .workspace import Workspace

MAX_FEATURE_VIEWS = 4  # augmented views whose features are cached; epochs cycle through them


# --------------------------------------------------------------------------------------------
# Device, seeds, precision
# --------------------------------------------------------------------------------------------
def select_device(preference: str = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; an unavailable explicit choice is a ConfigError."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("A CUDA GPU was asked for but none is available here; choose device 'auto' or 'cpu'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("Apple's MPS device was asked for but is not available; choose 'auto' or 'cpu'.")
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (full precision) off CUDA."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------
def train_step(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
               optimizer: torch.optim.Optimizer, loss_fn: Callable, *,
               scaler: torch.amp.GradScaler | None = None,
               amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns the (detached) loss and the number of correct predictions."""
    optimizer.zero_grad(set_to_none=True)
    with _autocast(inputs.device, amp_dtype):
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
# Images to model inputs
# --------------------------------------------------------------------------------------------
class Normalizer:
    """uint8 [B,3,H,W] on any device -> normalised float on ``device`` (channels_last on CUDA)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def __call__(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        x = batch_uint8.to(self.device, non_blocking=True).float()
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)


class _ImageSet(torch.utils.data.Dataset):
    """Decoded uint8 images (possibly memory-mapped) + labels; the transform makes one view."""

    def __init__(self, images: torch.Tensor, indices: Sequence[int], labels: Sequence[int],
                 transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.images, self.indices, self.labels, self.transform = images, list(indices), list(labels), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image = torch.as_tensor(self.images[self.indices[i]]).clone()  # private copy: the cache may be a memmap
        return self.transform(image.unsqueeze(0))[0], self.labels[i]


def make_loader(images: torch.Tensor, indices: Sequence[int], labels: Sequence[int],
                transform: Callable, batch_size: int, *, shuffle: bool, seed: int = 0,
                num_workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        _ImageSet(images, indices, labels, transform), batch_size=batch_size, shuffle=shuffle,
        generator=generator, num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=num_workers > 0)


@torch.no_grad()
def extract_features(body: nn.Module, loader: Iterable, normalize: Normalizer,
                     amp_dtype: torch.dtype | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``body`` over a loader of (uint8 images, labels); returns float32 features and labels on CPU."""
    body.eval()
    feats, labels = [], []
    total = len(loader) if hasattr(loader, "__len__") else 0
    for i, (images, y) in enumerate(loader, start=1):
        with _autocast(normalize.device, amp_dtype):
            f = body(normalize(images))
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(y))
        if progress:
            progress(i, total)
    return torch.cat(feats), torch.cat(labels)


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


def load_dataset(config: RunConfig, workspace: Workspace, progress=None):
    from .data import Dataset, ingest

    if config.data.dataset_dir:
        return Dataset.load(config.data.dataset_dir)
    return ingest(config.data.source, dest=workspace.datasets_dir / _slug(config.data.source),
                  progress=progress)


def _slug(source: str) -> str:
    import hashlib
    from pathlib import Path

    path = Path(source).expanduser().resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in path.stem)[:40] or "data"
    return f"{stem}-{digest}"


def prepare_data(config: RunConfig, workspace: Workspace, resize_size: int,
                 emit: Callable[[ev.Event], None] = lambda e: None) -> PreparedData:
    from .data import check_trainable, decode_images, make_split

    def progress(phase: str):
        last = [0.0]

        def report(done: int, total: int, message: str = "") -> None:
            now = time.monotonic()
            if done == total or now - last[0] > 0.5:  # at most two events a second
                last[0] = now
                emit(ev.Progress(phase, done, total, message))
        return report

    ds = load_dataset(config, workspace, progress=progress("ingest"))
    check_trainable(ds)
    split = make_split(ds, config.data.val_fraction, config.data.test_fraction, config.data.split_seed)
    if not split.val:
        raise ConfigError("Training needs a validation set: set a validation fraction above 0 "
                          "or give a val/ folder.")
    images = decode_images(ds, list(range(len(ds.records))), size=resize_size,
                           cache_dir=workspace.cache_dir, progress=progress("decode"))
    return PreparedData(classes=list(ds.classes), paths=[r.path for r in ds.records], images=images,
                        labels=list(ds.labels), train=list(split.train), val=list(split.val),
                        test=list(split.test), dataset_dir=str(ds.root))


# --------------------------------------------------------------------------------------------
# Optimiser and schedule
# --------------------------------------------------------------------------------------------
from .optim import make_optimizer, make_scheduler  # noqa: E402 - moved to optim.py; the trainer calls them


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
class _Stopped(Exception):
    pass


class Trainer:
    """Trains one run. Use ``train()`` unless you need the pieces."""

    def __init__(self, config: RunConfig, run: Run, workspace: Workspace,
                 subscribers: Sequence[ev.Subscriber] = (), control: ev.Control | None = None,
                 resume: bool = False) -> None:
        config.validate()
        self.config, self.run, self.workspace = config, run, workspace
        self.subscribers = [run.append_event, *subscribers]
        self.control = control or ev.Control(poll=run.stop_requested)
        self.resume = resume
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.global_step = 0

    def emit(self, event: ev.Event) -> None:
        for subscriber in self.subscribers:
            subscriber(event)

    # -- public ---------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        run = self.run
        run.set_status("running", pid=os.getpid(), started=time.time(), error=None)
        try:
            result = self._fit()
        except _Stopped:
            if self.best_epoch is not None:  # results first, so a reader of "cancelled" finds them
                self._final_evaluation()
            run.set_status("cancelled", best_epoch=self.best_epoch, best_val_acc=self._best_val_acc())
            self.emit(ev.RunCancelled(epoch=len(self.history), best_epoch=self.best_epoch))
            return {"state": "cancelled", "best_epoch": self.best_epoch}
        except TLError as exc:
            self._fail(str(exc), exc)
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                msg = ("The device ran out of memory. Lower the batch size, pick a smaller backbone "
                       "(e.g. mobilenet_v3_small) or freeze more layers.")
                self._fail(msg, exc)
                raise TrainingOutOfMemory(msg) from exc
            self._fail(f"Training failed unexpectedly: {type(exc).__name__}: {exc}", exc)
            raise
        run.set_status("finished", best_epoch=self.best_epoch, finished=time.time(),
                       best_val_acc=result.get("val", {}).get("accuracy"))
        self.emit(ev.RunFinished(best_epoch=self.best_epoch or 0, metrics=result,
                                 stopped_early=result.get("stopped_early", False)))
        return result

    # -- internals ------------------------------------------------------------------------
    def _fail(self, reason: str, exc: BaseException) -> None:
        self.run.set_status("failed", error=reason)
        self.emit(ev.RunFailed(reason=reason, error_type=type(exc).__name__))

    def _check_stop(self) -> None:
        if self.control.should_stop:
            raise _Stopped()

    def _fit(self) -> dict[str, Any]:
        from .backbones import build_model, get_backbone
        from .freeze import apply_freeze, body_frozen_throughout, param_groups

        cfg = self.config
        seed_everything(cfg.train.seed)
        spec = get_backbone(cfg.model.backbone)
        self.preprocess = spec.preprocess
        self.device = select_device(cfg.train.device)
        self.amp_dtype = autocast_dtype(self.device, cfg.train.amp)
        self.data = data = prepare_data(cfg, self.workspace, spec.preprocess.resize_size, self.emit)
        self.run.write_json("classes.json", data.classes)
        self.run.set_status("running", dataset_dir=data.dataset_dir)

        model = build_model(cfg.model.backbone, len(data.classes), cfg.model.head,
                            pretrained=cfg.model.pretrained, weights_dir=cfg.model.weights_dir)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device)
        self.normalize = Normalizer(spec.preprocess.mean, spec.preprocess.std, self.device)
        apply_freeze(model, cfg.freeze, epoch=1)
        use_cache = (cfg.train.feature_cache or cfg.model.head.kind in CLASSICAL_HEADS) and \
            body_frozen_throughout(cfg.freeze, model.group_names, cfg.train.epochs)
        if cfg.model.head.kind in CLASSICAL_HEADS:
            return self._fit_classical()

        batch_size = cfg.train.batch_size
        steps_per_epoch = math.ceil(len(data.train) / batch_size)
        self.optimizer = make_optimizer(cfg.train.optimizer, param_groups(model, cfg.freeze, cfg.train.lr),
                                        cfg.train.lr, cfg.train.weight_decay)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.total_steps = steps_per_epoch * cfg.train.epochs
        self.scheduler = make_scheduler(cfg.train.schedule, self.optimizer, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
        start_epoch = self._maybe_resume() + 1

        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.emit(ev.RunStarted(
            run_id=self.run.id, device=describe_device(self.device), classes=data.classes,
            num_train=len(data.train), num_val=len(data.val), epochs=cfg.train.epochs,
            steps_per_epoch=steps_per_epoch, trainable_params=trainable,
            total_params=sum(p.numel() for p in model.parameters()), feature_cache=use_cache))

        stopped_early = False
        epochs_without_gain = 0
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            self._check_stop()
            t0 = time.perf_counter()
            apply_freeze(model, cfg.freeze, epoch=epoch)
            train_loss, train_acc, val_loss, val_acc = self._epoch_with_oom_retry(epoch, use_cache)
            seconds = time.perf_counter() - t0
            lr = self.optimizer.param_groups[-1]["lr"]
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                 "val_loss": val_loss, "val_acc": val_acc, "seconds": seconds})
            self.emit(ev.EpochEnded(epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds, trainable))
            improved = self._is_better(val_loss, val_acc)
            if improved:
                self.best_metric = val_loss if cfg.train.monitor == "val_loss" else val_acc
                self.best_epoch = epoch
                epochs_without_gain = 0
                self._save("best", epoch)
            else:
                epochs_without_gain += 1
            self._save("last", epoch)
            self.run.set_status("running", epoch=epoch, best_epoch=self.best_epoch,
                                best_val_acc=self._best_val_acc())
            patience = cfg.train.early_stopping_patience
            if patience and epochs_without_gain >= patience:
                stopped_early = True
                self.emit(ev.Note(f"Stopped early: {cfg.train.monitor} did not improve for {patience} epochs."))
                break
        result = self._final_evaluation()
        result["stopped_early"] = stopped_early
        return result

    def _best_val_acc(self) -> float | None:
        for row in self.history:
            if row["epoch"] == self.best_epoch:
                return row["val_acc"]
        return None

    def _is_better(self, val_loss: float, val_acc: float) -> bool:
        if self.best_metric is None:
            return True
        if self.config.train.monitor == "val_loss":
            return val_loss < self.best_metric
        return val_acc > self.best_metric

    # -- epochs over images ---------------------------------------------------------------
    def _train_transform(self):
        from .data import make_augment

        return make_augment(self.config.data.augment, self.preprocess.crop_size)

    def _eval_transform(self):
        from .data import center_crop

        crop = self.preprocess.crop_size
        return lambda batch: center_crop(batch, crop)

    def _loader(self, indices: Sequence[int], transform, shuffle: bool, epoch: int = 0):
        data = self.data
        return make_loader(data.images, indices, [data.labels[i] for i in indices], transform,
                           self.config.train.batch_size, shuffle=shuffle,
                           seed=self.config.train.seed + epoch, num_workers=self.config.train.num_workers,
                           pin_memory=self.device.type == "cuda")

    def _epoch_with_oom_retry(self, epoch: int, use_cache: bool) -> tuple[float, float, float, float]:
        """One training epoch and its validation; on out-of-memory, halve the batch and run the
        epoch again (the abandoned attempt's steps are taken back)."""
        step_at_start = self.global_step
        while True:
            try:
                train_loss, train_acc = self._cached_epoch(epoch) if use_cache else self._image_epoch(epoch)
                return (train_loss, train_acc, *self._validate(use_cache))
            except Exception as exc:
                if not is_out_of_memory(exc) or self.config.train.batch_size <= 1:
                    raise
                self._halve_batch(epoch, step_at_start)

    def _image_epoch(self, epoch: int) -> tuple[float, float]:
        from .freeze import set_train_mode

        set_train_mode(self.model, self.config.freeze, epoch=epoch)
        loader = self._loader(self.data.train, self._train_transform(), shuffle=True, epoch=epoch)
        return self._run_batches(epoch, ((self.normalize(x), y) for x, y in loader), len(loader), self.model)

    def _halve_batch(self, epoch: int, step_at_start: int) -> None:
        """Halve the batch and rebuild the schedule for the new number of steps, at the same
        point of the run (the learning rate does not jump or end early)."""
        import dataclasses

        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        new = max(1, self.config.train.batch_size // 2)
        self.config = dataclasses.replace(self.config, train=dataclasses.replace(self.config.train, batch_size=new))
        done = step_at_start / max(self.total_steps, 1)  # the share of the run behind us
        self.total_steps = math.ceil(len(self.data.train) / new) * self.config.train.epochs
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base
        self.scheduler = make_scheduler(self.config.train.schedule, self.optimizer, self.total_steps)
        self.global_step = round(done * self.total_steps)
        for _ in range(self.global_step):
            self.scheduler.step()
        self.emit(ev.Note(f"Out of memory: retrying epoch {epoch} with batch size {new}."))

    def _run_batches(self, epoch: int, batches: Iterable, steps: int, model: nn.Module) -> tuple[float, float]:
        total_loss = torch.zeros((), device=self.device)
        total_correct = torch.zeros((), device=self.device)
        seen = 0
        t_last = time.perf_counter()
        for step, (x, y) in enumerate(batches, start=1):
            y = torch.as_tensor(y).to(self.device, non_blocking=True)
            loss, correct = train_step(model, x, y, self.optimizer, self.loss_fn,
                                       scaler=self.scaler, amp_dtype=self.amp_dtype)
            if self.global_step < self.total_steps:  # OneCycle refuses to step past its end
                self.scheduler.step()
            self.global_step += 1
            n = y.shape[0]
            seen += n
            total_loss += loss * n
            total_correct += correct
            now = time.perf_counter()
            self.emit(ev.BatchEnded(epoch=epoch, step=step, steps=steps, global_step=self.global_step,
                                    loss=float(loss), accuracy=float(correct) / n,
                                    lr=self.optimizer.param_groups[-1]["lr"],
                                    images_per_s=n / max(now - t_last, 1e-9)))
            t_last = now
            self._check_stop()
        return float(total_loss) / max(seen, 1), float(total_correct) / max(seen, 1)

    @torch.no_grad()
    def _logits(self, indices: Sequence[int], use_cache: bool) -> torch.Tensor:
        self.model.eval()
        if use_cache:
            feats = self._val_features if indices is self.data.val else self._features_for(indices)
            return self.model.head(feats.to(self.device)).float().cpu()
        out = []
        for x, _ in self._loader(indices, self._eval_transform(), shuffle=False):
            with _autocast(self.device, self.amp_dtype):
                out.append(self.model(self.normalize(x)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.data.classes))

    def _validate(self, use_cache: bool) -> tuple[float, float]:
        logits = self._logits(self.data.val, use_cache)
        labels = torch.tensor([self.data.labels[i] for i in self.data.val])
        loss = nn.functional.cross_entropy(logits, labels).item()
        acc = (logits.argmax(1) == labels).float().mean().item()
        return loss, acc

    # -- feature cache --------------------------------------------------------------------
    def _features_for(self, indices: Sequence[int], transform=None, phase: str = "features") -> torch.Tensor:
        transform = transform or self._eval_transform()
        loader = self._loader(indices, transform, shuffle=False)  # the batch size that fits (halved on OOM)
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] > 0.5:
                last[0] = now
                self.emit(ev.Progress(phase, done, total, "computing backbone features"))
            self._check_stop()
        feats, _ = extract_features(self.model.body, loader, self.normalize, self.amp_dtype, progress)
        return feats

    def _ensure_feature_cache(self) -> None:
        if hasattr(self, "_train_views"):
            return
        augment = self.config.data.augment
        n_views = 1 if augment == "none" else min(self.config.train.epochs, MAX_FEATURE_VIEWS)
        transform = self._eval_transform() if augment == "none" else self._train_transform()
        torch.manual_seed(self.config.train.seed)
        self._train_views = [self._features_for(self.data.train, transform) for _ in range(n_views)]
        self._val_features = self._features_for(self.data.val)

    def _cached_epoch(self, epoch: int) -> tuple[float, float]:
        from .freeze import set_train_mode

        self._ensure_feature_cache()
        set_train_mode(self.model, self.config.freeze, epoch=epoch)
        feats = self._train_views[(epoch - 1) % len(self._train_views)].to(self.device)
        labels = torch.tensor([self.data.labels[i] for i in self.data.train], device=self.device)
        g = torch.Generator().manual_seed(self.config.train.seed + epoch)
        order = torch.randperm(len(labels), generator=g).to(self.device)
        bs = self.config.train.batch_size
        batches = ((feats[order[i:i + bs]], labels[order[i:i + bs]]) for i in range(0, len(order), bs))
        return self._run_batches(epoch, batches, math.ceil(len(order) / bs), self.model.head)

    # -- classical heads ------------------------------------------------------------------
    def _fit_classical(self) -> dict[str, Any]:
        from .classical import fit_classical

        cfg, data = self.config, self.data
        self.emit(ev.RunStarted(
            run_id=self.run.id, device=describe_device(self.device), classes=data.classes,
            num_train=len(data.train), num_val=len(data.val), epochs=1, steps_per_epoch=1,
            trainable_params=0, total_params=sum(p.numel() for p in self.model.parameters()),
            feature_cache=True))
        t0 = time.perf_counter()
        train_feats = self._features_for(self.data.train)
        self._val_features = self._features_for(self.data.val)
        y = [data.labels[i] for i in data.train]
        linear = fit_classical(cfg.model.head.kind, train_feats.numpy(), np.asarray(y),
                               len(data.classes), seed=cfg.train.seed)
        self.model.head = linear.to(self.device)
        train_logits = self.model.head(train_feats.to(self.device)).float().cpu()
        y_t = torch.tensor(y)
        train_loss = nn.functional.cross_entropy(train_logits, y_t).item()
        train_acc = (train_logits.argmax(1) == y_t).float().mean().item()
        val_loss, val_acc = self._validate(True)
        self.history.append({"epoch": 1, "train_loss": train_loss, "train_acc": train_acc,
                             "val_loss": val_loss, "val_acc": val_acc})
        self.emit(ev.EpochEnded(1, train_loss, train_acc, val_loss, val_acc, 0.0,
                                time.perf_counter() - t0, linear.weight.numel() + linear.bias.numel()))
        self.best_epoch = 1
        self.optimizer = None
        self._save("best", 1)
        self._save("last", 1)
        return self._final_evaluation(use_cache=True)

    # -- checkpoints, resume, final evaluation --------------------------------------------
    def _save(self, kind: str, epoch: int) -> None:
        state: dict[str, Any] = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "epoch": epoch, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "history": self.history, "global_step": self.global_step,
            "batch_size": self.config.train.batch_size,
        }
        if kind == "last" and self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = self.scheduler.state_dict()
        path = self.run.save_checkpoint(kind, state)
        self.emit(ev.CheckpointSaved(epoch=epoch, kind=kind, path=str(path), metric=self.best_metric))

    def _maybe_resume(self) -> int:
        """Load the last checkpoint when resuming; returns the epoch it ended."""
        if not self.resume or not self.run.checkpoint_path("last").exists():
            return 0
        state = self.run.load_checkpoint("last", map_location=self.device)
        self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.history = list(state["history"])
        self.global_step = state.get("global_step", 0)
        self.emit(ev.Note(f"Resumed after epoch {state['epoch']}."))
        return int(state["epoch"])

    def _final_evaluation(self, use_cache: bool | None = None) -> dict[str, Any]:
        """Evaluate the best checkpoint on val (and test) and write eval.json."""
        from .evaluation import evaluate_logits

        if use_cache is None:
            use_cache = hasattr(self, "_val_features")
        state = self.run.load_checkpoint("best", map_location=self.device)
        self.model.load_state_dict(state["model"])
        result: dict[str, Any] = {"best_epoch": self.best_epoch, "history": self.history}
        splits = {"val": self.data.val, "test": self.data.test}
        for name, indices in splits.items():
            if not indices:
                continue
            if name == "test":
                use_cache_here = False
            else:
                use_cache_here = use_cache
            logits = self._logits(indices, use_cache_here)
            labels = [self.data.labels[i] for i in indices]
            report = evaluate_logits(logits, labels, self.data.classes, [self.data.paths[i] for i in indices])
            self.run.write_json(f"eval_{name}.json", report.to_dict())
            result[name] = report.summary()
        self.run.write_json("metrics.json", result)
        return result


def train(config: RunConfig, run: Run, workspace: Workspace, subscribers: Sequence[ev.Subscriber] = (),
          control: ev.Control | None = None, resume: bool = False) -> dict[str, Any]:
    """Train ``run`` as ``config`` says; events go to the run log and ``subscribers``."""
    return Trainer(config, run, workspace, subscribers, control, resume=resume).fit()
