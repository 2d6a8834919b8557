"""Experiments planned and started: several runs that differ in one thing, queued together.

Kinds (``KINDS``): "strategies" compares transfer strategies (``STRATEGIES``) on the same data,
split, seed, backbone and epoch budget; "data_size" trains chosen strategies on 5 ... 100% of each
class's training images (``DataConfig.train_fraction``; validation stays whole); "freeze_depth"
freezes the lowest k body groups of one backbone and fine-tunes the rest, for k = 0 (full
fine-tune) ... all (a probe); "backbones" ("Which backbone?") trains the same linear probe on each
backbone whose weights are here. Each kind plans its members with its own ``plan_*`` function and
reuses the rest: the file (``tl_core.experiments.store``), ``launch_members``, the table
(``tl_core.experiments.table``) and the report (``tl_core.experiments.report``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from tl_core.config import FreezePlan, RunConfig
from tl_core.errors import ConfigError
from tl_core.experiments.store import Experiment, ExperimentStore, Member
from tl_core.experiments.strategies import (
    DISCRIMINATIVE_SPREAD,
    STRATEGIES,
    StrategyOptions,
    member_config,
    unavailable,
)
from tl_core.runs import MAX_NAME_LENGTH
from tl_core.workspace import Workspace


def member_name(experiment_name: str, label: str) -> str:
    """A member run's name, "<experiment> · <member>", cut to the length a run name may have."""
    suffix = f" · {label}"
    return experiment_name[:MAX_NAME_LENGTH - len(suffix)].rstrip() + suffix


def plan_strategies(base: RunConfig, keys: Sequence[str], options: StrategyOptions,
                    name: str) -> list[Member]:
    """The members of a strategy comparison, in the order of ``STRATEGIES``; ConfigError for an
    unknown key, none at all, or a member config no training can use."""
    unknown = [k for k in keys if k not in STRATEGIES]
    if unknown:
        raise ConfigError(f"Unknown strategy {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}.")
    if not keys:
        raise ConfigError("Choose at least one strategy to compare.")
    if options.top_n < 1 and {"top_n", "top_n_discriminative"} & set(keys):
        raise ConfigError("Fine-tuning the top N groups needs N of at least 1.")
    blocked = unavailable(base, keys)
    if blocked:
        raise ConfigError(" ".join(blocked.values()))
    members = []
    for key in (k for k in STRATEGIES if k in keys):
        strategy = STRATEGIES[key]
        label = strategy.label_for(options)
        config = dataclasses.replace(strategy.build(base, options), name=member_name(name, label))
        config.validate()
        members.append(Member(key=key, label=label, config=config))
    return members


Launcher = Callable[[Workspace, RunConfig], str]  # jobs.start_job's shape: config -> a queued run's id


def launch_members(workspace: Workspace, experiment: Experiment, launch: Launcher | None = None) -> Experiment:
    """Create and queue each member's run, saving the experiment after each one, so a failure part
    way leaves a file that lists the runs that did start. Returns the experiment with run ids."""
    members = list(experiment.members)
    if launch is None:
        from tl_core.jobs import launch as jobs
        from tl_core.jobs.limits import check_can_start

        # the server's limits, once for the whole experiment: it is one click and counts as one job
        check_can_start(workspace, members[0].config if members else None, new_runs=len(members),
                               is_active=jobs.is_active)
        # looked up now: the queue of worker processes, one run per device slot
        launch = functools.partial(jobs.start_job, in_batch=True)
    store = ExperimentStore(workspace)
    store.save(experiment)
    for i, member in enumerate(members):
        members[i] = dataclasses.replace(member, run_id=launch(workspace, member.config))
        experiment = dataclasses.replace(experiment, members=tuple(members))
        store.save(experiment)
    return experiment


DATA_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)  # the data-size sweep's shares of each class's training images
DEFAULT_SWEEP_STRATEGIES = ("linear_probe", "full_finetune", "random_init")  # why transfer learning matters


def plan_data_size(base: RunConfig, keys: Sequence[str], options: StrategyOptions, name: str,
                   fractions: Sequence[float] = DATA_FRACTIONS) -> list[Member]:
    """The members of a data-size sweep: each strategy (in ``STRATEGIES`` order) on each share of
    the training images (smallest first). Members differ from the strategy comparison's only in
    ``data.train_fraction``; the validation set is the full run's. ConfigError for no share or one
    outside (0, 1]."""
    shares = sorted({float(f) for f in fractions})
    if not shares:
        raise ConfigError("Choose at least one share of the training images.")
    if not all(0 < f <= 1 for f in shares):
        raise ConfigError("Shares of the training images must be above 0% and at most 100%.")
    members = []
    for strategy_member in plan_strategies(base, keys, options, name):
        for share in shares:
            label = f"{strategy_member.label}, {share:.0%} of the images"
            config = strategy_member.config
            config = dataclasses.replace(config, name=member_name(name, label),
                                         data=dataclasses.replace(config.data, train_fraction=share))
            config.validate()
            members.append(Member(key=f"{strategy_member.key}@{share:g}", label=label, config=config,
                                  series=strategy_member.label))
    return members


FREEZE_SERIES = {"one_lr": "one learning rate", "discriminative": "discriminative learning rates"}


def plan_freeze_depth(base: RunConfig, name: str, discriminative: bool = True) -> list[Member]:
    """The members of a freeze-depth sweep on ``base``'s backbone with G body groups: for k = 0 ... G,
    the lowest k groups frozen and the rest fine-tuned with the head (``last_n = G - k``; k = 0 is a
    full fine-tune, k = G a probe), with a linear head and everything else the base's. With
    ``discriminative``, a second line spreads (lr / 100, lr) over the groups that train; it stops
    at k = G - 1, since with every group frozen both lines are the same run."""
    from tl_core.model.registry import body_group_names

    groups = len(body_group_names(base.model.backbone))
    members = []
    for series, spread in (("one_lr", False), ("discriminative", True)):
        if spread and not discriminative:
            continue
        for frozen in range(groups if spread else groups + 1):
            freeze = FreezePlan(mode="last_n", last_n=groups - frozen, train_bn=base.freeze.train_bn,
                                lr_range=(base.train.lr / DISCRIMINATIVE_SPREAD, base.train.lr) if spread else None)
            label = f"{frozen} of {groups} groups frozen" + (", discriminative lrs" if spread else "")
            config = dataclasses.replace(member_config(base, freeze=freeze), name=member_name(name, label))
            config.validate()
            members.append(Member(key=f"{series}@{frozen}", label=label, config=config,
                                  series=FREEZE_SERIES[series], x=float(frozen)))
    return members


def backbones_here(weights_dir: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The registered backbones whose pretrained weights are on this machine (in the registry's
    order), and the others, each with how to get its weights (``weights_status``)."""
    from tl_core.model.registry import list_backbones
    from tl_core.model.weights import weights_status

    here, missing = [], {}
    for spec in list_backbones():
        status = weights_status(spec.name, weights_dir)
        if status.available:
            here.append(spec.name)
        else:
            missing[spec.name] = status.how_to
    return here, missing


def plan_backbones(base: RunConfig, name: str, backbones: Sequence[str] | None = None) -> list[Member]:
    """The members of "Which backbone?": the strategy comparison's linear probe (backbone frozen, a
    new linear head on average-pooled features, pretrained weights; the base's data, split, seed,
    epochs, batch size and learning rate) on each of ``backbones`` (default: every one whose weights
    are here, ``backbones_here``, in the registry's order), each once, in the order given. A member's ``x`` is its backbone's
    published ImageNet accuracy in % (None where none is published), its ``series`` what that
    number measures ("top-1", "linear probe", "zero-shot"). ConfigError for no backbone, an unknown
    one, one without weights here, or 0 epochs."""
    from tl_core.model.registry import get_backbone
    from tl_core.model.weights import weights_status

    here, _ = backbones_here(base.model.weights_dir)
    chosen = here if backbones is None else list(dict.fromkeys(backbones))
    if not chosen:
        raise ConfigError("No backbone to compare: none has its pretrained weights on this machine. The Model "
                          "page says how to get them.")
    if base.train.epochs < 1:
        raise ConfigError("Which backbone? trains a linear probe on each backbone: set at least 1 epoch on the "
                          "Train page.")
    specs = [get_backbone(b) for b in chosen]  # ConfigError with close matches for an unknown name
    for spec in specs:
        status = weights_status(spec.name, base.model.weights_dir)
        if not status.available:
            raise ConfigError(status.how_to)
    members = []
    for spec in specs:
        # Flatten is VGG's Keras recipe; every backbone pools by average, so only the backbone differs
        head = dataclasses.replace(base.model.head, pool="avg")
        on_it = dataclasses.replace(base, model=dataclasses.replace(base.model, backbone=spec.name, head=head))
        config = STRATEGIES["linear_probe"].build(on_it, StrategyOptions())
        config = dataclasses.replace(config, name=member_name(name, spec.name),
                                     model=dataclasses.replace(config.model, pretrained=True))
        config.validate()
        members.append(Member(key=spec.name, label=spec.name, config=config, series=spec.accuracy,
                              x=spec.top1 if spec.top1 > 0 else None))
    return members


DEFAULT_NAMES = {"strategies": "Comparison", "data_size": "Data sweep", "freeze_depth": "Freeze depth",
                 "backbones": "Which backbone"}


def _start(workspace: Workspace, base: RunConfig, kind: str, name: str, plan: Callable[[str], list[Member]],
           options: dict[str, Any], launch: Launcher | None) -> Experiment:
    if not (base.data.dataset_dir or base.data.source):
        raise ConfigError("Choose a dataset before starting an experiment.")
    store = ExperimentStore(workspace)
    name = " ".join(name.split()) or time.strftime(f"{DEFAULT_NAMES[kind]} %d %b %H:%M")
    experiment = Experiment(id=store.new_id(), name=name, kind=kind, base=base, members=tuple(plan(name)),
                            options=options, created=time.time())
    return launch_members(workspace, experiment, launch)


def start_experiment(workspace: Workspace, base: RunConfig, strategy_keys: Sequence[str], name: str = "", *,
                     top_n: int = 2, launch: Launcher | None = None) -> Experiment:
    """Plan a strategy comparison on ``base`` (its data, split, seed, backbone, epochs and batch
    size are every member's), save it and queue its runs (they train one after another on a
    one-device machine). ``launch`` defaults to ``jobs.start_job``."""
    options = StrategyOptions(top_n=top_n)
    return _start(workspace, base, "strategies", name, lambda n: plan_strategies(base, strategy_keys, options, n),
                  dataclasses.asdict(options), launch)


def start_data_size(workspace: Workspace, base: RunConfig, strategy_keys: Sequence[str] = DEFAULT_SWEEP_STRATEGIES,
                    name: str = "", *, fractions: Sequence[float] = DATA_FRACTIONS, top_n: int = 2,
                    launch: Launcher | None = None) -> Experiment:
    """Plan, save and queue a data-size sweep (``plan_data_size``)."""
    options = StrategyOptions(top_n=top_n)
    return _start(workspace, base, "data_size", name,
                  lambda n: plan_data_size(base, strategy_keys, options, n, fractions),
                  {**dataclasses.asdict(options), "fractions": sorted(float(f) for f in fractions)}, launch)


def start_freeze_depth(workspace: Workspace, base: RunConfig, name: str = "", *, discriminative: bool = True,
                       launch: Launcher | None = None) -> Experiment:
    """Plan, save and queue a freeze-depth sweep (``plan_freeze_depth``)."""
    return _start(workspace, base, "freeze_depth", name, lambda n: plan_freeze_depth(base, n, discriminative),
                  {"discriminative": discriminative}, launch)


def start_which_backbone(workspace: Workspace, base: RunConfig, backbones: Sequence[str] | None = None,
                         name: str = "", *, launch: Launcher | None = None) -> Experiment:
    """Plan, save and queue "Which backbone?" (``plan_backbones``)."""
    return _start(workspace, base, "backbones", name, lambda n: plan_backbones(base, n, backbones),
                  {"backbones": None if backbones is None else list(backbones)}, launch)
