"""Optimisers and schedules by name: the registries hold exactly the config's choices."""

from __future__ import annotations

import pytest
import torch

from tl_core.config import OPTIMIZERS, Optimizer, Schedule, choices
from tl_core.errors import ConfigError
from tl_core.model.optim import SCHEDULES, make_optimizer, make_scheduler


def groups() -> list[dict]:
    return [{"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.1},
            {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.01}]


def test_registries_hold_the_configs_choices():
    assert list(OPTIMIZERS) == list(choices(Optimizer))
    assert list(SCHEDULES) == list(choices(Schedule))


@pytest.mark.parametrize("name", choices(Optimizer))
def test_every_optimizer_builds_and_steps(name):
    opt = make_optimizer(name, groups(), lr=0.1, weight_decay=1e-4)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]  # per-group lrs kept
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)
    sum(p.sum() for g in opt.param_groups for p in g["params"]).backward()
    opt.step()


def test_sgd_uses_nesterov_momentum():
    opt = make_optimizer("sgd", groups(), lr=0.1, weight_decay=0.0)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"]


@pytest.mark.parametrize(("name", "alpha", "eps"), [("rmsprop", 0.99, 1e-8), ("rmsprop_keras", 0.9, 1e-7)])
def test_rmsprop_with_pytorchs_or_keras_defaults(name, alpha, eps):
    opt = make_optimizer(name, groups(), lr=1e-4, weight_decay=0.0)
    assert isinstance(opt, torch.optim.RMSprop)
    assert all((g["alpha"], g["eps"], g["momentum"], g["centered"]) == (alpha, eps, 0, False)
               for g in opt.param_groups)


def test_keras_rmsprop_step_is_keras_2s_update():
    """Keras 2: v = rho*v + (1-rho)*g^2; p -= lr*g / (sqrt(v) + eps), with rho 0.9, eps 1e-7."""
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 1e-4]))
    opt = make_optimizer("rmsprop_keras", [{"params": [param]}], lr=1e-2, weight_decay=0.0)
    expected, v = param.detach().clone(), torch.zeros(3)
    for step in range(3):
        opt.zero_grad()
        (param ** 2 * (step + 1)).sum().backward()
        g = param.grad.detach().clone()
        v = 0.9 * v + 0.1 * g ** 2
        expected = expected - 1e-2 * g / (v.sqrt() + 1e-7)
        opt.step()
        assert torch.allclose(param.detach(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", choices(Schedule))
def test_every_schedule_steps_once_per_batch(name):
    opt = make_optimizer("sgd", groups(), lr=0.1, weight_decay=0.0)
    sched = make_scheduler(name, opt, total_steps=9)
    for _ in range(9):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] <= 0.1


def test_schedule_shapes():
    def lr_after(name: str, steps: int, total: int = 9) -> float:
        opt = make_optimizer("sgd", groups(), lr=0.1, weight_decay=0.0)
        sched = make_scheduler(name, opt, total_steps=total)
        for _ in range(steps):
            opt.step()
            sched.step()
        return opt.param_groups[0]["lr"]

    assert lr_after("constant", 5) == pytest.approx(0.1)
    assert lr_after("step", 3) == pytest.approx(0.01)  # x0.1 after each third
    assert lr_after("cosine", 9) == pytest.approx(0.0, abs=1e-9)
    assert make_scheduler("cosine", make_optimizer("adamw", groups(), 0.1, 0.0), total_steps=0).T_max == 1


@pytest.mark.parametrize("make, what, valid", [
    (lambda: make_optimizer("lion", groups(), 0.1, 0.0), "optimizer 'lion'", "adamw, sgd, rmsprop or rmsprop_keras"),
    (lambda: make_scheduler("warmup", make_optimizer("sgd", groups(), 0.1, 0.0), 5), "schedule 'warmup'",
     "cosine, onecycle, step or constant"),
])
def test_unknown_names_list_the_valid_ones(make, what, valid):
    with pytest.raises(ConfigError) as info:
        make()
    assert what in str(info.value) and valid in str(info.value)
