"""Automatic batch size: the search with a fake "fits" predicate, the remembered choice, the
config and CLI switch, and a run on CPU (where it keeps the configured size and says so)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.tiny_backbone import NAME as TINY
from tl_core import atomic
from tl_core import events as ev
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.training import autobatch
from tl_core.training.autobatch import choose_batch_size, largest_fitting, power_of_two_floor


def fits_up_to(limit: int, calls: list[int]):
    def fits(batch: int) -> bool:
        calls.append(batch)
        return batch <= limit
    return fits


def test_largest_fitting_doubles_until_the_first_batch_that_does_not_fit():
    calls: list[int] = []
    assert largest_fitting(fits_up_to(48, calls), cap=10_000) == 32
    assert calls == [1, 2, 4, 8, 16, 32, 64]  # stops at the first failure
    calls.clear()
    assert largest_fitting(fits_up_to(48, calls), cap=20) == 16  # capped (the training set's size)
    assert calls == [1, 2, 4, 8, 16]
    assert largest_fitting(lambda b: False, cap=64) == 1  # nothing fits: the run meets the OOM and says so
    assert largest_fitting(lambda b: True, cap=10**9) == autobatch.MAX_AUTO_BATCH
    assert [power_of_two_floor(n) for n in (0, 1, 2, 3, 100, 128)] == [1, 1, 2, 2, 64, 128]


def tiny_model() -> nn.Module:
    model = nn.Sequential()
    model.add_module("body", nn.Linear(4, 4))
    model.add_module("head", nn.Linear(4, 2))
    model.body.requires_grad_(False)
    return model


def choose(tmp_path, fits=None, backbone="mobilenet_v2", n_train=1000, model=None):
    return choose_batch_size(model or tiny_model(), backbone=backbone, device=torch.device("cpu"), amp_dtype=None,
                             crop_size=224, n_classes=2, n_train=n_train, configured=32, cache_dir=tmp_path,
                             fits=fits)


def test_on_cpu_the_configured_batch_stays_and_the_note_says_why(tmp_path):
    choice = choose(tmp_path)
    assert (choice.batch_size, choice.measured) == (32, False)
    assert "needs a CUDA GPU" in choice.note and "32" in choice.note
    assert not (tmp_path / autobatch.CACHE_FILE).exists()


def test_the_choice_is_measured_once_and_remembered_per_backbone_and_trainable_part(tmp_path):
    calls: list[int] = []
    first = choose(tmp_path, fits_up_to(100, calls))
    assert (first.batch_size, first.measured) == (64, True) and "64" in first.note
    stored = json.loads((tmp_path / autobatch.CACHE_FILE).read_text())
    (key, entry), = stored.items()
    assert "mobilenet_v2" in key and "224px" in key and "head:10" in key  # only the head trains: 4*2+2
    assert (entry["batch_size"], entry["searched_up_to"]) == (64, 512)

    def must_not_measure(batch: int) -> bool:
        raise AssertionError("measured again")
    again = choose(tmp_path, must_not_measure)
    assert (again.batch_size, again.measured) == (64, False) and "earlier run" in again.note
    # A smaller training set caps the remembered size; another backbone or trainable part measures.
    assert choose(tmp_path, must_not_measure, n_train=40).batch_size == 32
    calls.clear()
    assert choose(tmp_path, fits_up_to(16, calls), backbone="resnet18").batch_size == 16 and calls
    full = tiny_model().requires_grad_(True)
    calls.clear()
    assert choose(tmp_path, fits_up_to(8, calls), model=full).batch_size == 8 and calls
    assert len(json.loads((tmp_path / autobatch.CACHE_FILE).read_text())) == 3


def test_a_size_capped_by_a_small_dataset_is_not_reused_for_a_larger_one(tmp_path):
    assert choose(tmp_path, fits_up_to(10_000, []), n_train=20).batch_size == 16
    calls: list[int] = []
    assert choose(tmp_path, fits_up_to(10_000, calls), n_train=300).batch_size == 256
    assert calls  # measured again: 16 was the dataset's limit, not the GPU's


def test_a_damaged_memory_file_is_measured_again_and_a_full_disk_does_not_stop_the_run(tmp_path, monkeypatch):
    (tmp_path / autobatch.CACHE_FILE).write_text("{not json")
    assert choose(tmp_path, fits_up_to(4, [])).batch_size == 4
    (tmp_path / autobatch.CACHE_FILE).write_text(json.dumps({"x": {"batch_size": "big"}}))
    assert choose(tmp_path, fits_up_to(4, [])).batch_size == 4

    def full(*args, **kw):
        raise atomic.disk_full()
    monkeypatch.setattr(atomic, "write_bytes", full)
    choice = choose(tmp_path, fits_up_to(8, []), backbone="resnet50")
    assert choice.batch_size == 8 and choice.measured


def test_config_and_cli_switch(tmp_path):
    from tl_core.cli import options
    from tl_core.cli import parser as cli

    old = RunConfig(data=DataConfig(source="x")).to_dict()
    del old["train"]["auto_batch"]  # a config saved before the option existed
    assert RunConfig.from_dict(old).train.auto_batch is False
    parse = cli.make_parser().parse_args
    auto = options.build_config(parse(["train", "x", "--batch-size", "auto"]))
    assert auto.train.auto_batch and auto.train.batch_size == TrainConfig().batch_size
    assert options.build_config(parse(["train", "x", "--batch-size", "8"])).train == TrainConfig(batch_size=8)
    with pytest.raises(SystemExit):
        parse(["train", "x", "--batch-size", "big"])


def test_a_run_with_auto_batch_on_cpu_trains_at_the_configured_size(workspace, image_folder):
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train

    cfg = RunConfig(data=DataConfig(source=str(image_folder), val_fraction=0.25, augment="none"),
                    model=ModelConfig(backbone=TINY), train=TrainConfig(epochs=1, batch_size=8, auto_batch=True, schedule="constant"))
    run = RunStore(workspace).create(cfg)
    seen: list = []
    train(cfg, run, workspace, subscribers=[seen.append])
    notes = [e.message for e in seen if isinstance(e, ev.Note)]
    assert any("needs a CUDA GPU" in n and "8" in n for n in notes), notes
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert started.steps_per_epoch == 4  # 27 training images in batches of 8
    assert run.state == "finished"


def test_step_fits_counts_headroom_and_oom_and_leaves_the_model_as_it_was(monkeypatch):
    """The CUDA predicate on CPU, with the driver's numbers faked: 120 MB per image, 1000 MB free."""
    mb = 2**20
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    stats = model[1].running_mean.clone()
    batches: list[int] = []

    def measure_or_oom(module, args):
        batches.append(args[0].shape[0])
        if args[0].shape[0] > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    model.register_forward_pre_hook(measure_or_oom)
    for name, fake in {"synchronize": lambda *a: None, "empty_cache": lambda: None,
                       "mem_get_info": lambda *a: (1000 * mb, 1000 * mb), "memory_allocated": lambda *a: 0,
                       "reset_peak_memory_stats": lambda *a: None,
                       "max_memory_allocated": lambda *a: batches[-1] * 120 * mb}.items():
        monkeypatch.setattr(torch.cuda, name, fake)
    fits = autobatch.step_fits(model, (3, 8, 8), 2, torch.device("cpu"), None, headroom=0.15)
    assert fits(4)  # 480 MB <= 850 MB
    assert not fits(8)  # 960 MB: fits the device, not the headroom
    assert not fits(16)  # out of memory
    assert largest_fitting(fits, cap=64) == 4
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(model[1].running_mean, stats)  # the probes' random inputs left no trace
