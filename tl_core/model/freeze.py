"""Which layer groups train, how BatchNorm behaves in frozen ones, and per-group learning rates.

Plain functions over a model's layer groups (``TransferModel.groups()``: stem ... head), after
fastai's ``freeze_to``/``train_bn``/``even_mults``. The head always trains.

Modes (``FreezePlan.mode``):
- ``feature_extractor``: only the head trains.
- ``last_n``: the last ``plan.last_n`` body groups and the head.
- ``groups``: the body groups named in ``plan.groups`` and the head.
- ``full``: everything.
- ``gradual``: starts as a feature extractor; every ``plan.unfreeze_every`` epochs one more body
  group, from the top down, becomes trainable (epochs are 1-based).
- ``lp_ft``: a linear probe, then full fine-tuning (Kumar et al. 2022): only the head trains in
  epochs 1..``plan.probe_epochs``, every group after that.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tl_core.config import FreezeMode, FreezePlan, choices, one_of
from tl_core.errors import ConfigError


@dataclass(frozen=True)
class GroupInfo:
    name: str  # layer group name, "head" last
    num_params: int  # parameters in the group
    trainable: bool  # at the epoch asked about
    lr_mult: float  # learning rate of this group / the head's


def trainable_groups(plan: FreezePlan, group_names: list[str], epoch: int = 1) -> list[bool]:
    """One flag per group (``group_names`` ends with "head", which is always True)."""
    body = list(group_names[:-1])
    n = len(body)
    if plan.mode == "feature_extractor":
        flags = [False] * n
    elif plan.mode == "full":
        flags = [True] * n
    elif plan.mode == "last_n":
        k = max(0, min(plan.last_n, n))
        flags = [i >= n - k for i in range(n)]
    elif plan.mode == "groups":
        unknown = [g for g in plan.groups if g not in body and g != "head"]
        if unknown:
            raise ConfigError(f"Unknown layer group(s) {', '.join(map(repr, unknown))}. "
                              f"This backbone has: {', '.join(body)}.")
        flags = [name in plan.groups for name in body]
    elif plan.mode == "gradual":
        every = max(1, plan.unfreeze_every)
        k = min(n, max(0, (epoch - 1) // every))
        flags = [i >= n - k for i in range(n)]
    elif plan.mode == "lp_ft":
        flags = [epoch > plan.probe_epochs] * n
    else:
        raise ConfigError(f"Unknown freezing mode {plan.mode!r}. Choose {one_of(choices(FreezeMode))}.")
    return flags + [True]


def _ever_trainable(plan: FreezePlan, group_names: list[str]) -> list[bool]:
    """Groups that train at some epoch: they share the discriminative learning rates."""
    if plan.mode in ("gradual", "lp_ft"):
        return [True] * len(group_names)
    return trainable_groups(plan, group_names)


def body_frozen_throughout(plan: FreezePlan, group_names: list[str], epochs: int) -> bool:
    """True when no body group trains in epochs 1..``epochs`` and BatchNorm statistics stay fixed,
    so the body's features can be computed once and cached."""
    if plan.train_bn:
        return False
    return all(not any(trainable_groups(plan, group_names, e)[:-1]) for e in range(1, epochs + 1))


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """``n`` values from ``start`` to ``stop``, evenly spaced on a log scale (fastai ``even_mults``)."""
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step**i for i in range(n)]


def lr_multipliers(plan: FreezePlan, group_names: list[str]) -> list[float]:
    """Per-group learning rate relative to the head's.

    With ``plan.lr_range=(low, high)`` the groups that ever train get ``low/high ... 1`` spread
    geometrically, stem side lowest; groups that never train get the lowest value (unused).
    """
    if plan.lr_range is None:
        return [1.0] * len(group_names)
    low, high = plan.lr_range
    if not 0 < low <= high:
        raise ConfigError("Discriminative learning rates need 0 < low <= high.")
    ever = _ever_trainable(plan, group_names)
    mults = iter(m / high for m in even_mults(low, high, sum(ever)))
    lowest = low / high
    return [next(mults) if flag else lowest for flag in ever]


def _group_params(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def apply_freeze(model: nn.Module, plan: FreezePlan, epoch: int = 1) -> None:
    """Set ``requires_grad`` per group for ``epoch``; frozen parameters also lose any stale grad."""
    groups = model.groups()
    flags = trainable_groups(plan, [name for name, _ in groups], epoch)
    for (_, modules), trainable in zip(groups, flags, strict=True):
        for p in _group_params(modules):
            p.requires_grad_(trainable)
            if not trainable:
                p.grad = None


def set_train_mode(model: nn.Module, plan: FreezePlan, epoch: int = 1) -> None:
    """``model.train()``, but BatchNorm layers in frozen groups stay in eval mode (their running
    statistics do not change) unless ``plan.train_bn``."""
    model.train()
    if plan.train_bn:
        return
    groups = model.groups()
    flags = trainable_groups(plan, [name for name, _ in groups], epoch)
    for (_, modules), trainable in zip(groups, flags, strict=True):
        if not trainable:
            for module in modules:
                for m in module.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()


def param_groups(model: nn.Module, plan: FreezePlan, lr: float) -> list[dict]:
    """Optimizer parameter groups, one per layer group, with ``"lr"`` and ``"group"`` (its name).

    All parameters are included, frozen ones too (no grad, so optimizers skip them): gradual
    unfreezing then works without rebuilding the optimizer. ``lr`` is the head's learning rate.
    """
    groups = model.groups()
    mults = lr_multipliers(plan, [name for name, _ in groups])
    return [{"params": _group_params(modules), "lr": lr * mult, "group": name}
            for (name, modules), mult in zip(groups, mults, strict=True)]


def freeze_report(model: nn.Module, plan: FreezePlan, epoch: int = 1) -> list[GroupInfo]:
    """Per group: parameter count, whether it trains at ``epoch``, learning-rate multiplier."""
    groups = model.groups()
    names = [name for name, _ in groups]
    flags = trainable_groups(plan, names, epoch)
    mults = lr_multipliers(plan, names)
    return [GroupInfo(name, sum(p.numel() for p in _group_params(modules)), flag, mult)
            for (name, modules), flag, mult in zip(groups, flags, mults, strict=True)]
