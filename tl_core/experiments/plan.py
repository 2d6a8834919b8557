"""Experiments: several runs that differ in one thing, started together and compared.

An ``Experiment`` is a name, a kind, the base ``RunConfig`` the user set up, and its members: one
normal run each (listed on the Results and Runs pages, labelled "<experiment> · <member>"). It is
saved as ``<workspace>/experiments/<id>/experiment.json``; the runs keep their own folders, so
the experiment file only lists their ids.

Kinds (``KINDS``): "strategies" compares transfer strategies (``STRATEGIES``) on the same data,
split, seed, backbone and epoch budget; "data_size" trains chosen strategies on 5 ... 100% of each
class's training images (``DataConfig.train_fraction``; validation stays whole); "freeze_depth"
freezes the lowest k body groups of one backbone and fine-tunes the rest, for k = 0 (full
fine-tune) ... all (a probe). Each kind plans its members with its own ``plan_*`` function and
reuses the rest: the file, ``launch_members``, the table and the view. Members of a sweep carry
the line they belong to (``Member.series``) and, where the plan fixes it, their x (frozen groups).

``experiment_table`` reads each member's run folder (status and event log) into one row;
``explain`` turns a table into short sentences, the user's numbers first, then the literature
(see the teaching notes).
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tl_core import atomic
from tl_core.config import FreezePlan, RunConfig
from tl_core.errors import ConfigError, ExperimentNotFound, RunNotFound, TLError
from tl_core.events import BatchEnded, EpochEnded, Progress, RunStarted
from tl_core.runs import MAX_NAME_LENGTH, RunStore
from tl_core.workspace import Workspace, is_safe_id

KINDS: dict[str, str] = {"strategies": "Compare strategies", "data_size": "How much data is enough",
                         "freeze_depth": "Freeze depth"}
EXPERIMENT_FILE = "experiment.json"


# ----------------------------------------------------------------------------------------------
# Strategies as data
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StrategyOptions:
    top_n: int = 2  # body groups, counted from the head, that the "top N" strategies fine-tune


@dataclass(frozen=True)
class Strategy:
    key: str
    label: str  # for people; "{n}" is replaced by StrategyOptions.top_n
    explanation: str  # one line: what trains, and why one would choose it
    build: Callable[[RunConfig, StrategyOptions], RunConfig]  # base config -> the member's config

    def label_for(self, options: StrategyOptions) -> str:
        return self.label.format(n=options.top_n)


def _member(base: RunConfig, *, freeze: FreezePlan, head: str = "linear", pretrained: bool | None = None) -> RunConfig:
    """``base`` with the strategy's freezing plan and head kind (and weights), nothing else changed.

    Every gradient-trained strategy gets a linear head, so between them only what trains differs
    (an MLP head in the base would make the "linear probe" something else). BatchNorm handling is
    the base's, except in a frozen backbone: a probe keeps the pretrained network exactly as it is
    (its BatchNorm statistics too), which is also what lets its features be computed once and
    shared by every frozen member."""
    model = dataclasses.replace(base.model, head=dataclasses.replace(base.model.head, kind=head),
                                pretrained=base.model.pretrained if pretrained is None else pretrained)
    train_bn = base.freeze.train_bn and freeze.mode != "feature_extractor"
    return dataclasses.replace(base, model=model, freeze=dataclasses.replace(freeze, train_bn=train_bn))


def _probe_epochs(epochs: int) -> int:
    """LP-FT's probe: a quarter of the budget, at least one epoch (fastai's ``fine_tune`` probes one)."""
    if epochs < 2:
        raise ConfigError("LP-FT needs at least 2 epochs (a probe, then fine-tuning); raise the epochs "
                          "or leave LP-FT out.")
    return max(1, epochs // 4)


# The discriminative variant spreads (lr / 100, lr) over the groups that train, as fastai's
# ``fine_tune`` does (``slice(base_lr / 100, base_lr)``): the head learns at the base rate, the
# lowest trained group 100 times slower.
DISCRIMINATIVE_SPREAD = 100.0

STRATEGIES: dict[str, Strategy] = {s.key: s for s in (
    Strategy("linear_probe", "linear probe",
             "Backbone frozen, a new linear layer learns: fast, and safe with few images.",
             lambda b, o: _member(b, freeze=FreezePlan(mode="feature_extractor"))),
    Strategy("logreg", "logistic regression on features",
             "Backbone frozen; scikit-learn's logistic regression is fitted on the cached features (no epochs).",
             lambda b, o: _member(b, freeze=FreezePlan(mode="feature_extractor"), head="logreg")),
    Strategy("linear_svm", "linear SVM on features",
             "Backbone frozen; a linear support-vector machine is fitted on the cached features.",
             lambda b, o: _member(b, freeze=FreezePlan(mode="feature_extractor"), head="linear_svm")),
    Strategy("lda", "LDA on features",
             "Backbone frozen; linear discriminant analysis is fitted on the cached features.",
             lambda b, o: _member(b, freeze=FreezePlan(mode="feature_extractor"), head="lda")),
    Strategy("top_n", "fine-tune top {n} groups",
             "The last N groups of the backbone and the head learn, all at the same learning rate.",
             lambda b, o: _member(b, freeze=FreezePlan(mode="last_n", last_n=o.top_n))),
    Strategy("top_n_discriminative", "fine-tune top {n} groups, discriminative lrs",
             "As above, but lower groups learn more slowly (down to 1/100 of the head's rate).",
             lambda b, o: _member(b, freeze=FreezePlan(mode="last_n", last_n=o.top_n, lr_range=(
                 b.train.lr / DISCRIMINATIVE_SPREAD, b.train.lr)))),
    Strategy("lp_ft", "LP-FT (probe, then fine-tune all)",
             "The head learns alone for the first quarter of the epochs, then every layer fine-tunes.",
             lambda b, o: _member(b, freeze=FreezePlan(mode="lp_ft", probe_epochs=_probe_epochs(b.train.epochs)))),
    Strategy("full_finetune", "full fine-tune",
             "Every layer learns from the start, from the pretrained weights.",
             lambda b, o: _member(b, freeze=FreezePlan(mode="full"))),
    Strategy("random_init", "random init (no transfer)",
             "The same network trained in full from random weights: what transfer learning saves you.",
             lambda b, o: _member(b, freeze=FreezePlan(mode="full"), pretrained=False)),
)}
DEFAULT_STRATEGIES = ("linear_probe", "logreg", "lp_ft", "full_finetune", "random_init")


# ----------------------------------------------------------------------------------------------
# The experiment and its file
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    key: str  # what distinguishes it within its kind (a strategy key for "strategies")
    label: str  # for people: legends and tables
    run_id: str = ""  # "" until its run exists
    config: RunConfig | None = None
    series: str = ""  # sweeps: the line it belongs to (a strategy, a learning-rate rule); "" otherwise
    x: float | None = None  # sweeps: its x when the plan fixes it (freeze depth: frozen body groups)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "run_id": self.run_id,
                "config": self.config.to_dict() if self.config else None, "series": self.series, "x": self.x}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Member:
        config = data.get("config")
        x = data.get("x")
        return cls(key=data["key"], label=data["label"], run_id=data.get("run_id", ""),
                   config=RunConfig.from_dict(config) if config else None, series=data.get("series", ""),
                   x=None if x is None else float(x))


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    kind: str  # a KINDS key
    base: RunConfig  # the settings the members were derived from
    members: tuple[Member, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)  # the kind's choices, e.g. {"top_n": 2}
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "base": self.base.to_dict(),
                "members": [m.to_dict() for m in self.members], "options": dict(self.options),
                "created": self.created}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        try:
            return cls(id=data["id"], name=data["name"], kind=data["kind"], base=RunConfig.from_dict(data["base"]),
                       members=tuple(Member.from_dict(m) for m in data.get("members", ())),
                       options=dict(data.get("options", {})), created=float(data.get("created", 0.0)))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"This experiment file is damaged ({exc}); its runs are still on the Runs page. "
                              "Start the comparison again to get a new one.") from exc


class ExperimentStore:
    """The experiments of one workspace, in ``<workspace>/experiments/<id>/experiment.json``."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.root = workspace.experiments_dir

    def new_id(self) -> str:
        return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)

    def save(self, experiment: Experiment) -> None:
        atomic.write_json(self.root / experiment.id / EXPERIMENT_FILE, experiment.to_dict())

    def get(self, experiment_id: str) -> Experiment:
        path = self.root / experiment_id / EXPERIMENT_FILE if is_safe_id(experiment_id) else None
        data = atomic.read_json(path) if path else None
        if data is None:
            raise ExperimentNotFound(f"No experiment '{experiment_id}' in this workspace; pick one from "
                                     "the list of past experiments or start a new comparison.")
        return Experiment.from_dict(data)

    def list(self) -> list[Experiment]:
        """Experiments, newest first (a damaged file is left out)."""
        found = []
        for path in sorted(self.root.glob(f"*/{EXPERIMENT_FILE}"), reverse=True):
            try:
                found.append(self.get(path.parent.name))
            except TLError:
                continue
        return found


# ----------------------------------------------------------------------------------------------
# Planning and starting
# ----------------------------------------------------------------------------------------------
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
            config = dataclasses.replace(_member(base, freeze=freeze), name=member_name(name, label))
            config.validate()
            members.append(Member(key=f"{series}@{frozen}", label=label, config=config,
                                  series=FREEZE_SERIES[series], x=float(frozen)))
    return members


DEFAULT_NAMES = {"strategies": "Comparison", "data_size": "Data sweep", "freeze_depth": "Freeze depth"}


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


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------
TABLE_COLUMNS = ["strategy", "state", "final val acc", "best val acc", "best epoch", "wall time (s)",
                 "trainable params", "images/s", "images/s of", "val images", "train images", "images per class",
                 "key", "run", "series", "x"]
RATE_OF_FEATURES = "backbone feature extraction"  # frozen members: the body's pass over the images
RATE_OF_TRAINING = "training steps"  # the others: forward and backward passes, median over batches


def member_row(workspace: Workspace, member: Member, now: float | None = None) -> dict[str, Any]:
    """One table row from the member's run folder: its status and its event log."""
    from tl_core.jobs.launch import job_state

    row: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS)
    row.update(strategy=member.label, key=member.key, run=member.run_id, series=member.series, x=member.x)
    try:
        run = RunStore(workspace).get(member.run_id)
    except RunNotFound:
        row["state"] = "deleted"
        return row
    status = job_state(run)
    row["state"] = status.state
    events, _ = run.read_events()
    started = next((e for e in events if isinstance(e, RunStarted)), None)
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    accs = [(e.val_acc, e.epoch) for e in epochs if e.val_acc is not None]
    if accs:
        row["final val acc"] = accs[-1][0]
        best = max(accs, key=lambda pair: (pair[0], -pair[1]))  # the first epoch of equal highs
        row["best val acc"], row["best epoch"] = best
    trainable = [e.trainable_params for e in epochs] + ([started.trainable_params] if started else [])
    row["trainable params"] = max(trainable) if trainable else None  # LP-FT: after the probe
    if started:
        row["val images"] = started.num_val
        row["train images"] = started.num_train
        row["images per class"] = started.num_train / max(1, len(started.classes))  # the mean, for the x axis
    if status.started:
        end = status.finished if status.finished else (now or time.time()) if status.active else status.updated
        row["wall time (s)"] = max(0.0, float(end or status.started) - float(status.started))
    if started and started.feature_cache:
        rates = [e.images_per_s for e in events if isinstance(e, Progress) and e.phase == "features" and e.images_per_s]
        row["images/s of"] = RATE_OF_FEATURES
    else:
        rates = [e.images_per_s for e in events if isinstance(e, BatchEnded) and e.images_per_s]
        row["images/s of"] = RATE_OF_TRAINING if started else None
    row["images/s"] = statistics.median(rates) if rates else None
    return row


def experiment_table(workspace: Workspace, experiment: Experiment) -> pd.DataFrame:
    """One row per member, in the experiment's order (``TABLE_COLUMNS``; missing numbers are None).
    "best val acc" is the highest validation accuracy of any epoch; "images/s of" says whether
    "images/s" is the backbone's feature-extraction rate (frozen members, whose features may come
    from the shared store: then no rate) or the median rate of the training steps."""
    now = time.time()
    rows = [member_row(workspace, m, now) for m in experiment.members if m.run_id]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# ----------------------------------------------------------------------------------------------
# What the numbers say
# ----------------------------------------------------------------------------------------------
def _pct(value: float) -> str:
    return f"{value:.1%}"


def _points(diff: float) -> str:
    points = abs(diff) * 100
    return f"{points:.1f} percentage point{'s' if round(points, 1) != 1 else ''}"


def _compare(a: float, b: float, margin: float) -> int:
    """1 when a beat b by more than ``margin``, -1 when b beat a, 0 when they are about the same."""
    return 0 if abs(a - b) <= margin else (1 if a > b else -1)


def _finished(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["state"] == "finished") & table["best val acc"].notna()]


def _margin(done: pd.DataFrame) -> float:
    """One validation image (at least half a point): smaller differences count as "about the same"."""
    n_val = min(int(v) for v in done["val images"].dropna()) if done["val images"].notna().any() else 0
    return max(1.0 / n_val if n_val else 0.0, 0.005)


def explain(table: pd.DataFrame, kind: str = "strategies") -> list[str]:
    """Short sentences about an experiment of ``kind``: first what the user's finished members
    show, then what studies found (author, year). Empty until two members have finished. A
    difference of one validation image or less counts as "about the same"."""
    if kind == "data_size":
        return explain_data_size(table)
    if kind == "freeze_depth":
        return explain_freeze_depth(table)
    done = _finished(table)
    if len(done) < 2:
        return []
    acc = {row["key"]: float(row["best val acc"]) for _, row in done.iterrows()}
    label = {row["key"]: row["strategy"] for _, row in done.iterrows()}
    n_val = min(int(v) for v in done["val images"].dropna()) if done["val images"].notna().any() else 0
    margin = max(1.0 / n_val if n_val else 0.0, 0.005)
    out: list[str] = []

    best_key = max(acc, key=acc.get)
    worst_key = min(acc, key=acc.get)
    if _compare(acc[best_key], acc[worst_key], margin) == 0:
        out.append(f"On your images, all {len(acc)} finished strategies reached about the same highest "
                   f"validation accuracy ({_pct(acc[worst_key])} to {_pct(acc[best_key])}).")
    else:
        out.append(f"On your images, {label[best_key]} reached the highest validation accuracy "
                   f"({_pct(acc[best_key])}) and {label[worst_key]} the lowest ({_pct(acc[worst_key])}).")
    if n_val and n_val < 200:
        out.append(f"Your validation set has {n_val} images, so one image is {_pct(1 / n_val)}: differences "
                   "that small can be chance; a second split seed would tell.")

    if "random_init" in acc:
        pretrained = "full_finetune" if "full_finetune" in acc else max(
            (k for k in acc if k != "random_init"), key=acc.get, default=None)
        if pretrained is not None:
            a, b = acc[pretrained], acc["random_init"]
            verdict = _compare(a, b, margin)
            if verdict > 0:
                out.append(f"Starting from pretrained weights ({label[pretrained]}, {_pct(a)}) beat the same "
                           f"network from random initialisation ({_pct(b)}) by {_points(a - b)}. Studies found "
                           "this gap is largest on small datasets; with enough data and training, networks "
                           "trained from scratch catch up, though pretrained ones still converge faster "
                           "(Kornblith et al. 2019; He et al. 2019).")
            elif verdict == 0:
                out.append(f"Here pretrained weights ({label[pretrained]}, {_pct(a)}) and random "
                           f"initialisation ({_pct(b)}) ended about the same. Studies found pretraining helps "
                           "least on large datasets and on images unlike ImageNet, where its main gain is "
                           "faster convergence (He et al. 2019; Raghu et al. 2019).")
            else:
                out.append(f"Here random initialisation ({_pct(b)}) beat pretrained weights "
                           f"({label[pretrained]}, {_pct(a)}) by {_points(b - a)}. That is unusual on small "
                           "datasets; Kornblith et al. 2019 found pretraining helped little on some "
                           "fine-grained datasets, and Raghu et al. 2019 little on large medical ones.")

    if "linear_probe" in acc and "full_finetune" in acc:
        a, b = acc["full_finetune"], acc["linear_probe"]
        verdict = _compare(a, b, margin)
        mine = {1: f"Fine-tuning everything ({_pct(a)}) beat the linear probe ({_pct(b)}) by {_points(a - b)}.",
                0: f"Fine-tuning everything ({_pct(a)}) and the linear probe ({_pct(b)}) ended about the same.",
                -1: f"The linear probe ({_pct(b)}) beat fine-tuning everything ({_pct(a)}) by {_points(b - a)}: "
                    "with few images, fine-tuning millions of weights can overfit, which is why the rule of "
                    "thumb for small datasets similar to ImageNet is a linear classifier on the features "
                    "(CS231n notes)."}
        out.append(mine[verdict] + " Kumar et al. 2022 found fine-tuning about 2 points better than a probe "
                   "on images like the training ones, but about 7 points worse on shifted images (new "
                   "cameras, places, styles): fine-tuning distorts the pretrained features.")

    if "lp_ft" in acc and "full_finetune" in acc:
        a, b = acc["lp_ft"], acc["full_finetune"]
        word = {1: "beat", 0: "matched", -1: "trailed"}[_compare(a, b, margin)]
        out.append(f"LP-FT ({_pct(a)}) {word} plain fine-tuning ({_pct(b)}). Kumar et al. 2022 found LP-FT "
                   "about 1 point better on images like the training ones and about 10 points better on "
                   "shifted ones: a head trained first keeps the early fine-tuning steps from distorting "
                   "the features.")

    classical = [k for k in ("logreg", "linear_svm", "lda") if k in acc]
    if classical and "linear_probe" in acc:
        parts = ", ".join(f"{label[k]} {_pct(acc[k])}" for k in classical)
        out.append(f"On the same frozen features: linear probe {_pct(acc['linear_probe'])}, {parts}. With "
                   "fixed features, Kornblith et al. 2019 found that better ImageNet models transfer better "
                   "(r = 0.99 with logistic regression), so a stronger backbone is the first thing to try "
                   "for a probe.")

    if "top_n" in acc and "top_n_discriminative" in acc:
        a, b = acc["top_n_discriminative"], acc["top_n"]
        word = {1: "beat", 0: "matched", -1: "trailed"}[_compare(a, b, margin)]
        out.append(f"Discriminative learning rates ({_pct(a)}) {word} one learning rate for every group "
                   f"({_pct(b)}). fastai fine-tunes with them by default (Howard and Gugger 2020): early "
                   "layers hold general features that need the smallest changes (Yosinski et al. 2014).")

    timed = done[done["wall time (s)"].notna()]
    if len(timed) >= 2:
        fast = timed.loc[timed["wall time (s)"].idxmin()]
        slow = timed.loc[timed["wall time (s)"].idxmax()]
        if fast["key"] != slow["key"]:
            shared = (timed["images/s of"] == RATE_OF_FEATURES).sum() >= 2
            out.append(f"Cost: {fast['strategy']} took {fast['wall time (s)']:.0f} s, {slow['strategy']} "
                       f"{slow['wall time (s)']:.0f} s." + (" The frozen members share one pass of the backbone "
                                                          "over your images: the first of them pays for it."
                                                          if shared else ""))
    return out


def explain_data_size(table: pd.DataFrame) -> list[str]:
    """The data-size sweep: where pretrained weights beat random initialisation most, and how the
    probe and fine-tuning compare at the smallest and largest share (member keys "<strategy>@<share>")."""
    done = _finished(table)
    done = done[done["images per class"].notna()]
    if len(done) < 2:
        return []
    margin = _margin(done)
    acc: dict[tuple[str, float], float] = {}
    per_class: dict[float, float] = {}
    label: dict[str, str] = {}
    for _, row in done.iterrows():
        strategy, _, share = str(row["key"]).rpartition("@")
        acc[(strategy, float(share))] = float(row["best val acc"])
        per_class[float(share)] = float(row["images per class"])
        label[strategy] = row["series"] or strategy
    out: list[str] = []
    shares = sorted(per_class)
    small, large = shares[0], shares[-1]
    for strategy in (k for k in STRATEGIES if k in label):
        if (strategy, small) in acc and (strategy, large) in acc and small != large:
            out.append(f"{label[strategy].capitalize()}: {_pct(acc[(strategy, small)])} with about "
                       f"{per_class[small]:.0f} images per class, {_pct(acc[(strategy, large)])} with "
                       f"{per_class[large]:.0f}.")
    gaps = {}
    for share in shares:
        pretrained = {k: a for (k, sh), a in acc.items() if sh == share and k != "random_init"}
        if ("random_init", share) in acc and pretrained:
            best = max(pretrained, key=pretrained.get)
            gaps[share] = (pretrained[best] - acc[("random_init", share)], best)
    if gaps:
        widest = max(gaps, key=lambda sh: gaps[sh][0])
        gap, best = gaps[widest]
        if gap > margin:
            out.append(f"Pretrained weights helped most with about {per_class[widest]:.0f} images per class: "
                       f"{label[best]} {_pct(acc[(best, widest)])} against random initialisation "
                       f"{_pct(acc[('random_init', widest)])}, {_points(gap)} apart.")
        else:
            out.append("At no size did pretrained weights beat random initialisation by more than one "
                       "validation image.")
        if len(gaps) >= 2 and widest != max(gaps):
            last_gap, _ = gaps[max(gaps)]
            out.append(f"With the most images (about {per_class[max(gaps)]:.0f} per class) the gap was "
                       f"{_points(last_gap)}.")
        out.append("Studies found the same shape: transfer matters most when data is small; with enough "
                   "data and training, networks trained from scratch catch up, though pretrained ones "
                   "converge much faster (He et al. 2019; Kornblith et al. 2019; Raghu et al. 2019).")
    if ("linear_probe", small) in acc and ("full_finetune", small) in acc:
        a, b = acc[("full_finetune", small)], acc[("linear_probe", small)]
        word = {1: "beat", 0: "matched", -1: "trailed"}[_compare(a, b, margin)]
        out.append(f"With the fewest images, fine-tuning everything ({_pct(a)}) {word} the linear probe "
                   f"({_pct(b)}): with few images, a probe has far fewer weights to overfit.")
    return out


def explain_freeze_depth(table: pd.DataFrame) -> list[str]:
    """The freeze-depth sweep: which number of frozen groups did best, the two ends, and Yosinski
    et al. 2014 (member keys "<series>@<frozen groups>")."""
    done = _finished(table)
    done = done[done["x"].notna()]
    if len(done) < 2:
        return []
    margin = _margin(done)
    acc = {(str(r["key"]).rpartition("@")[0], int(r["x"])): float(r["best val acc"]) for _, r in done.iterrows()}
    one = {k: a for (series, k), a in acc.items() if series == "one_lr"}
    out: list[str] = []
    if len(one) >= 2:
        best = max(one, key=lambda k: (one[k], k))
        lo, hi = min(one), max(one)
        out.append(f"On your images, with {best} group{'s' if best != 1 else ''} frozen the network reached the "
                   f"highest validation accuracy ({_pct(one[best])}); with {lo} frozen {_pct(one[lo])}, with "
                   f"{hi} frozen {_pct(one[hi])}.")
    spread = {k: a for (series, k), a in acc.items() if series == "discriminative"}
    both = sorted(set(one) & set(spread))
    if both:
        diff = statistics.mean(spread[k] - one[k] for k in both)
        word = "about the same as" if abs(diff) <= margin else ("better than" if diff > 0 else "worse than")
        out.append(f"Discriminative learning rates did {word} one learning rate on average "
                   f"({_points(diff)} over {len(both)} depth{'s' if len(both) != 1 else ''}).")
    out.append("Yosinski et al. 2014 found the first layers general (edges, colour blobs) and the later ones "
               "specific to the original task: freezing the lowest groups costs little, while the top groups "
               "gain most from fine-tuning, the more so the further your images are from ImageNet.")
    return out


__all__ = ["DATA_FRACTIONS", "DEFAULT_STRATEGIES", "DEFAULT_SWEEP_STRATEGIES", "FREEZE_SERIES", "KINDS", "STRATEGIES",
           "Experiment", "ExperimentNotFound", "ExperimentStore", "Member", "Strategy", "StrategyOptions",
           "experiment_table", "explain", "explain_data_size", "explain_freeze_depth", "launch_members",
           "member_name", "member_row", "plan_data_size", "plan_freeze_depth", "plan_strategies", "start_data_size",
           "start_experiment", "start_freeze_depth"]
