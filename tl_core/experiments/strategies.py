"""Transfer strategies as data: what each one trains, for people and for the planner.

A ``Strategy`` is a key, a label, a one-line explanation and ``build``: the base ``RunConfig`` the
user set up -> the config of a member that uses the strategy (its freezing plan, head kind and
weights; zero-shot also 0 epochs; nothing else changes), and ``needs``: why it cannot train on a
base, if it cannot (zero-shot needs an image-text backbone). ``STRATEGIES`` lists them in the
order the pages and tables show; ``tl_core.experiments.plan`` turns a choice of them into an
experiment's members.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tl_core.config import FreezePlan, RunConfig
from tl_core.errors import ConfigError


@dataclass(frozen=True)
class StrategyOptions:
    top_n: int = 2  # body groups, counted from the head, that the "top N" strategies fine-tune


@dataclass(frozen=True)
class Strategy:
    key: str
    label: str  # for people; "{n}" is replaced by StrategyOptions.top_n
    explanation: str  # one line: what trains, and why one would choose it
    build: Callable[[RunConfig, StrategyOptions], RunConfig]  # base config -> the member's config
    # base config -> "" when the strategy can train on it, else why not (for people)
    needs: Callable[[RunConfig], str] = lambda base: ""

    def label_for(self, options: StrategyOptions) -> str:
        return self.label.format(n=options.top_n)


def member_config(base: RunConfig, *, freeze: FreezePlan, head: str = "linear", pretrained: bool | None = None) -> RunConfig:
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


def _zero_shot(base: RunConfig, options: StrategyOptions) -> RunConfig:
    """The zero-shot head (the class names' text embeddings) on the frozen backbone, 0 epochs."""
    member = member_config(base, freeze=FreezePlan(mode="feature_extractor"), head="zero_shot")
    return dataclasses.replace(member, train=dataclasses.replace(member.train, epochs=0))


def _needs_image_text(base: RunConfig) -> str:
    from tl_core.model.registry import get_backbone

    spec = get_backbone(base.model.backbone)
    if spec.zero_shot:
        return ""
    return (f"{spec.name} sees images only; zero-shot needs an image-text backbone (CLIP, SigLIP, MobileCLIP), "
            "whose text tower turns the class names into a classifier. Choose one on the Model page.")


STRATEGIES: dict[str, Strategy] = {s.key: s for s in (
    Strategy("zero_shot", "zero-shot (no training images)",
             "Nothing trains: the image-text model's text tower turns the class names into the head. "
             "What the words alone get, before any of your images.",
             _zero_shot, needs=_needs_image_text),
    Strategy("linear_probe", "linear probe",
             "Backbone frozen, a new linear layer learns: fast, and safe with few images.",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="feature_extractor"))),
    Strategy("logreg", "logistic regression on features",
             "Backbone frozen; scikit-learn's logistic regression is fitted on the cached features (no epochs).",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="feature_extractor"), head="logreg")),
    Strategy("linear_svm", "linear SVM on features",
             "Backbone frozen; a linear support-vector machine is fitted on the cached features.",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="feature_extractor"), head="linear_svm")),
    Strategy("lda", "LDA on features",
             "Backbone frozen; linear discriminant analysis is fitted on the cached features.",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="feature_extractor"), head="lda")),
    Strategy("nearest_mean", "nearest class mean on features",
             "Backbone frozen; each class is the average of its images' features and an image goes to the "
             "nearest one: no training, works with a few images per class.",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="feature_extractor"), head="nearest_mean")),
    Strategy("top_n", "fine-tune top {n} groups",
             "The last N groups of the backbone and the head learn, all at the same learning rate.",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="last_n", last_n=o.top_n))),
    Strategy("top_n_discriminative", "fine-tune top {n} groups, discriminative lrs",
             "As above, but lower groups learn more slowly (down to 1/100 of the head's rate).",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="last_n", last_n=o.top_n, lr_range=(
                 b.train.lr / DISCRIMINATIVE_SPREAD, b.train.lr)))),
    Strategy("lp_ft", "LP-FT (probe, then fine-tune all)",
             "The head learns alone for the first quarter of the epochs, then every layer fine-tunes.",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="lp_ft", probe_epochs=_probe_epochs(b.train.epochs)))),
    Strategy("full_finetune", "full fine-tune",
             "Every layer learns from the start, from the pretrained weights.",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="full"))),
    Strategy("random_init", "random init (no transfer)",
             "The same network trained in full from random weights: what transfer learning saves you.",
             lambda b, o: member_config(b, freeze=FreezePlan(mode="full"), pretrained=False)),
)}


def unavailable(base: RunConfig, keys: Iterable[str] = STRATEGIES) -> dict[str, str]:
    """Those of ``keys`` that cannot train on ``base`` (e.g. zero-shot on an image-only backbone),
    each with why."""
    reasons = {key: STRATEGIES[key].needs(base) for key in keys if key in STRATEGIES}
    return {key: why for key, why in reasons.items() if why}


DEFAULT_STRATEGIES = ("linear_probe", "logreg", "lp_ft", "full_finetune", "random_init")
