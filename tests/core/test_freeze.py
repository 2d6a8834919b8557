"""Freezing plans over layer groups, BatchNorm in frozen groups, discriminative learning rates."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from tl_core.config import FreezePlan
from tl_core.errors import ConfigError
from tl_core.model.freeze import (
    apply_freeze,
    body_frozen_throughout,
    even_mults,
    freeze_report,
    param_groups,
    set_train_mode,
    trainable_groups,
)
from tl_core.model.registry import build_model

NAMES = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


@pytest.fixture(scope="module")
def resnet_state():
    torch.manual_seed(0)
    return build_model("resnet18", num_classes=3, pretrained=False).state_dict()


@pytest.fixture
def model(resnet_state):
    m = build_model("resnet18", num_classes=3, pretrained=False)
    m.load_state_dict(resnet_state)
    return m


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _one_step(model, plan, epoch=1, optimizer=None):
    torch.manual_seed(1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    apply_freeze(model, plan, epoch)
    set_train_mode(model, plan, epoch)
    optimizer = optimizer or torch.optim.SGD(param_groups(model, plan, lr=0.1), lr=0.1)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    return optimizer


def _changed(before, model, prefix):
    after = model.state_dict()
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


def test_modes_pick_the_right_groups():
    f = FreezePlan
    assert trainable_groups(f("feature_extractor"), NAMES) == [False] * 5 + [True]
    assert trainable_groups(f("full"), NAMES) == [True] * 6
    assert trainable_groups(f("last_n", last_n=2), NAMES) == [False] * 3 + [True] * 3
    assert trainable_groups(f("last_n", last_n=0), NAMES) == [False] * 5 + [True]
    assert trainable_groups(f("last_n", last_n=99), NAMES) == [True] * 6
    assert trainable_groups(f("groups", groups=("layer2", "layer4")), NAMES) == [
        False, False, True, False, True, True]


def test_unknown_group_or_mode_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="'layer9'.*stem, layer1, layer2, layer3, layer4"):
        trainable_groups(FreezePlan("groups", groups=("layer9",)), NAMES)
    with pytest.raises(ConfigError, match="feature_extractor, last_n"):
        trainable_groups(FreezePlan("sometimes"), NAMES)


def test_gradual_unfreezes_one_group_from_the_top_every_k_epochs():
    plan = FreezePlan("gradual", unfreeze_every=2)
    counts = [sum(trainable_groups(plan, NAMES, epoch)[:-1]) for epoch in range(1, 14)]
    assert counts == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5]
    assert trainable_groups(plan, NAMES, 3) == [False] * 4 + [True, True]  # layer4 first


def test_lp_ft_trains_the_head_alone_for_the_probe_epochs_then_every_group():
    plan = FreezePlan("lp_ft", probe_epochs=2)
    assert [trainable_groups(plan, NAMES, epoch) for epoch in (1, 2)] == [[False] * 5 + [True]] * 2
    assert [trainable_groups(plan, NAMES, epoch) for epoch in (3, 4, 10)] == [[True] * 6] * 3
    assert body_frozen_throughout(plan, NAMES, epochs=2)  # a budget within the probe is a linear probe
    assert not body_frozen_throughout(plan, NAMES, epochs=3)


def test_lp_ft_needs_a_probe_of_at_least_one_epoch():
    from tl_core.config import DataConfig, RunConfig

    with pytest.raises(ConfigError, match="probe_epochs"):
        RunConfig(data=DataConfig(source="x"), freeze=FreezePlan("lp_ft", probe_epochs=0)).validate()


def test_body_frozen_throughout_allows_the_feature_cache():
    assert body_frozen_throughout(FreezePlan(), NAMES, epochs=30)
    assert not body_frozen_throughout(FreezePlan(train_bn=True), NAMES, epochs=30)
    assert not body_frozen_throughout(FreezePlan("last_n", last_n=1), NAMES, epochs=1)
    assert body_frozen_throughout(FreezePlan("last_n", last_n=0), NAMES, epochs=5)
    assert body_frozen_throughout(FreezePlan("gradual", unfreeze_every=3), NAMES, epochs=3)
    assert not body_frozen_throughout(FreezePlan("gradual", unfreeze_every=3), NAMES, epochs=4)


def test_frozen_params_and_batchnorm_stats_do_not_change(model):
    plan = FreezePlan("last_n", last_n=1)
    before = _snapshot(model)
    _one_step(model, plan)
    for prefix in ("body.conv1", "body.bn1", "body.layer1", "body.layer2", "body.layer3"):
        assert _changed(before, model, prefix) == [], prefix  # weights and running stats
    assert _changed(before, model, "head.")
    changed = _changed(before, model, "body.layer4")
    assert any(k.endswith("conv1.weight") for k in changed)
    assert any(k.endswith("running_mean") for k in changed)  # trainable BN updates its stats
    frozen_bn = [m for m in model.body.layer1.modules() if isinstance(m, _BatchNorm)]
    assert frozen_bn and not any(m.training for m in frozen_bn)
    assert model.body.layer4.training and model.head.training


def test_train_bn_updates_statistics_in_frozen_groups(model):
    plan = FreezePlan("feature_extractor", train_bn=True)
    before = _snapshot(model)
    _one_step(model, plan)
    changed = _changed(before, model, "body.")
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)


def test_param_groups_hold_every_parameter_once_with_names(model):
    groups = param_groups(model, FreezePlan(), lr=1e-3)
    assert [g["group"] for g in groups] == NAMES
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert all(g["lr"] == 1e-3 for g in groups)


def test_discriminative_lrs_spread_geometrically_over_trainable_groups(model):
    plan = FreezePlan("last_n", last_n=2, lr_range=(1e-5, 1e-3))
    lrs = {g["group"]: g["lr"] for g in param_groups(model, plan, lr=1e-3)}
    assert lrs["head"] == pytest.approx(1e-3)
    assert lrs["layer4"] == pytest.approx(1e-4)
    assert lrs["layer3"] == pytest.approx(1e-5)
    assert even_mults(1e-5, 1e-3, 3) == pytest.approx([1e-5, 1e-4, 1e-3])

    full = {g["group"]: g["lr"] for g in param_groups(model, FreezePlan("full", lr_range=(1e-6, 1e-2)), 0.01)}
    assert full["stem"] == pytest.approx(1e-6) and full["head"] == pytest.approx(1e-2)
    values = [full[n] for n in NAMES]
    ratios = [b / a for a, b in zip(values, values[1:], strict=False)]
    assert ratios == pytest.approx([ratios[0]] * 5)

    # Gradual: every body group will train at some point, so all share the spread from the start.
    gradual = param_groups(model, FreezePlan("gradual", lr_range=(1e-6, 1e-2)), 0.01)
    assert [g["lr"] for g in gradual] == pytest.approx(values)
    lp_ft = param_groups(model, FreezePlan("lp_ft", lr_range=(1e-6, 1e-2)), 0.01)  # so does LP-FT's
    assert [g["lr"] for g in lp_ft] == pytest.approx(values)


def test_gradual_unfreezing_works_without_rebuilding_the_optimizer(model):
    plan = FreezePlan("gradual", unfreeze_every=1)
    before = _snapshot(model)
    optimizer = _one_step(model, plan, epoch=1)
    assert _changed(before, model, "body.") == []
    assert _changed(before, model, "head.")
    before = _snapshot(model)
    _one_step(model, plan, epoch=2, optimizer=optimizer)
    assert _changed(before, model, "body.layer4")
    assert _changed(before, model, "body.layer3") == []


def test_freeze_report(model):
    plan = FreezePlan("last_n", last_n=1, lr_range=(1e-4, 1e-3))
    report = freeze_report(model, plan)
    assert [r.name for r in report] == NAMES
    assert sum(r.num_params for r in report) == sum(p.numel() for p in model.parameters())
    assert [r.trainable for r in report] == [False] * 4 + [True, True]
    assert report[-1].lr_mult == pytest.approx(1.0) and report[-2].lr_mult == pytest.approx(0.1)
