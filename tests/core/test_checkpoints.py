"""A run's progress (TrainState) and its checkpoints: saved, then resumed into fresh objects."""

from __future__ import annotations

import torch
from torch import nn

from tl_core.config import DataConfig, RunConfig
from tl_core.runs import RunStore
from tl_core.training.checkpoints import TrainState, load_best, resume_from_last, save_checkpoint


def test_best_follows_the_monitored_metric():
    state = TrainState()
    assert state.is_better("val_acc", 1.0, 0.5)  # the first epoch is always the best so far
    state.record_best("val_acc", 1, val_loss=1.0, val_acc=0.5)
    state.history.append({"epoch": 1, "val_acc": 0.5})
    assert state.best_metric == 0.5 and state.best_val_acc() == 0.5
    assert state.is_better("val_acc", 2.0, 0.6) and not state.is_better("val_acc", 0.1, 0.5)
    loss_state = TrainState(best_metric=1.0)
    assert loss_state.is_better("val_loss", 0.9, 0.0) and not loss_state.is_better("val_loss", 1.1, 1.0)


def test_last_checkpoint_resumes_model_optimiser_and_state(workspace):
    run = RunStore(workspace).create(RunConfig(data=DataConfig(source="images")))
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = TrainState(history=[{"epoch": 1, "val_acc": 0.7}], best_metric=0.7, best_epoch=1, global_step=5)
    save_checkpoint(run, "best", 1, model, state, batch_size=8)
    save_checkpoint(run, "last", 1, model, state, batch_size=8, optimizer=optimizer, scheduler=scheduler)
    assert "optimizer" not in run.load_checkpoint("best") and run.load_checkpoint("last")["batch_size"] == 8

    fresh = nn.Linear(3, 2)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=1, gamma=0.5)
    resumed = TrainState()
    assert resume_from_last(run, fresh, fresh_opt, fresh_sched, resumed, torch.device("cpu")) == 1
    assert resumed == state
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.05
    other = nn.Linear(3, 2)
    load_best(run, other, torch.device("cpu"))
    assert torch.equal(other.weight, model.weight)


def test_nothing_to_resume_starts_at_epoch_zero(workspace):
    run = RunStore(workspace).create(RunConfig(data=DataConfig(source="images")))
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert resume_from_last(run, model, optimizer, None, TrainState(), torch.device("cpu")) == 0
