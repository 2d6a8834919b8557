"""``python -m tl_core``: every command on a small folder, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.tiny_backbone import NAME as TINY
from tl_core.cli.parser import main


def test_inspect_backbones_train_eval_predict_runs(workspace, image_folder, capsys):
    ws = ["--workspace", str(workspace.root)]
    assert main([*ws, "inspect", str(image_folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_counts"] == {"blue": 12, "green": 12, "red": 12}

    assert main([*ws, "backbones", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mobilenet_v2"]["weights"] == "bundled" and "vgg16" in rows

    # The tiny test backbone (its seeded features need a larger step than MobileNetV2's to learn in 2 epochs).
    assert main([*ws, "train", str(image_folder), "--backbone", TINY, "--epochs", "2", "--augment", "none",
                 "--lr", "0.1", "--batch-size", "8", "--name", "colours"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]

    assert main([*ws, "eval", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.8
    assert main([*ws, "eval", run_id, str(image_folder)]) == 0
    assert "precision" in capsys.readouterr().out

    assert main([*ws, "predict", run_id, str(image_folder / "green" / "3.jpg")]) == 0
    assert capsys.readouterr().out.split(": ")[1].startswith("green")

    assert main([*ws, "runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["id"] == run_id and runs[0]["state"] == "finished" and runs[0]["name"] == "colours"
    assert main([*ws, "runs", "--delete", run_id]) == 0
    assert main([*ws, "runs"]) == 0
    assert "No runs yet" in capsys.readouterr().out


@pytest.mark.parametrize("head", [["nearest_mean"], ["knn", "--neighbours", "3"]])
def test_prototype_and_neighbour_heads_train_evaluate_predict_explain_and_export(workspace, image_folder, head,
                                                                                 capsys):
    """Fitted on the tiny backbone's frozen features through the CLI; the checkpoint loads back
    (a knn head's stored training set included) for eval, predict, Grad-CAM and export."""
    from tl_core.evaluation.explain import explain_run_images
    from tl_core.model.loading import load_model
    from tl_core.runs import RunStore

    ws = ["--workspace", str(workspace.root)]
    assert main([*ws, "train", str(image_folder), "--backbone", TINY, "--head", *head, "--augment", "none"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    run = RunStore(workspace).get(run_id)
    assert run.state == "finished" and run.config.model.head.kind == head[0]
    assert run.read_metrics()["history"][0]["epoch"] == 1  # fitted once: one "epoch"

    assert main([*ws, "eval", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.8
    assert main([*ws, "predict", run_id, str(image_folder / "green" / "3.jpg")]) == 0
    assert capsys.readouterr().out.split(": ")[1].startswith("green")
    if head[0] == "knn":
        stored = load_model(run).head
        assert stored.neighbours == 3 and len(stored.train_labels) == len(stored.train_features) > 0
    (explained,) = explain_run_images(run, [str(image_folder / "red" / "1.jpg")], None, [None])
    assert not isinstance(explained, str), explained  # an overlay, not a reason it could not be made

    assert main([*ws, "export", run_id]) == 0
    export = json.loads((run.export_dir / "export.json").read_text())["report"]
    assert export["checks"] and all(check["passed"] for check in export["checks"]), export


@pytest.mark.parametrize("argv, words", [
    (["train", "{folder}", "--backbone", "resnet9000"], "Unknown backbone"),
    (["train", "/no/such/folder"], "does not exist"),
    (["train", "{folder}", "--backbone", "resnet18"], "TL_STUDIO_WEIGHTS"),
    (["predict", "20990101-000000-abcdef", "x.jpg"], "No run"),
])
def test_errors_are_one_line_without_traceback(workspace, image_folder, argv, words):
    argv = [a.replace("{folder}", str(image_folder)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "tl_core", "--workspace", str(workspace.root), *argv],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and words.lower() in error_lines[0].lower(), proc.stderr


def test_fetch_weights_reports_bundled_and_explains_missing(workspace, capsys):
    assert main(["fetch-weights", "mobilenet_v2"]) == 0
    assert "mobilenet_v2: already here (bundled)" in capsys.readouterr().out
    assert main(["fetch-weights", "resnet18"]) == 2  # offline in tests: the how-to, one line
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "resnet18-f37072fd.pth" in err


def test_resume_after_a_stop_from_the_app_trains_on(workspace, image_folder, capsys):
    from tl_core import events as ev
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train

    cfg = RunConfig(data=DataConfig(source=str(image_folder), val_fraction=0.25, augment="none"),
                    model=ModelConfig(backbone=TINY), train=TrainConfig(epochs=3, batch_size=8, lr=1e-2))
    run = RunStore(workspace).create(cfg)
    train(cfg, run, workspace, subscribers=[lambda e: isinstance(e, ev.EpochEnded) and run.request_stop()])
    assert run.state == "cancelled" and run.stop_requested()
    assert main(["--workspace", str(workspace.root), "train", "--resume", run.id]) == 0
    assert run.state == "finished" and not run.stop_requested()
    assert [h["epoch"] for h in run.read_metrics()["history"]] == [1, 2, 3]


def test_train_options_take_choices_defaults_and_help_from_the_config():
    import argparse
    import dataclasses
    import typing

    from tl_core.cli import options
    from tl_core.cli import parser as cli
    from tl_core.config import DataConfig, RunConfig

    commands = next(a for a in cli.make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = commands.choices["train"]
    actions = {a.option_strings[0]: a for a in train._actions if a.option_strings}
    for flag, (section, name) in options.FIELD_OPTIONS.items():
        fld, hint = options.option_field(section, name)
        action = actions[flag]
        assert fld.metadata["help"].replace("%", "%%") in action.help, flag
        if hint is bool:
            assert action.default is False  # a switch flips the field's default
            continue
        assert action.default == fld.default, flag
        if typing.get_origin(hint) is typing.Literal:
            assert tuple(action.choices) == typing.get_args(hint), flag
    # No options: exactly the config's defaults.
    args = cli.make_parser().parse_args(["train", "x"])
    assert options.build_config(args) == RunConfig(data=DataConfig(source="x"))
    switched = options.build_config(cli.make_parser().parse_args(["train", "x", "--no-amp", "--train-bn", "--random-init"]))
    assert (switched.train.amp, switched.freeze.train_bn, switched.model.pretrained) == (False, True, False)
    assert dataclasses.replace(switched.train, amp=True) == RunConfig(data=DataConfig(source="x")).train
    subset = options.build_config(cli.make_parser().parse_args(["train", "x", "--train-fraction", "0.1"]))
    assert subset.data == DataConfig(source="x", train_fraction=0.1)


def test_an_unknown_choice_is_refused_with_the_valid_names(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "x", "--optimizer", "lion"])
    assert info.value.code == 2
    assert "'adamw', 'sgd', 'rmsprop'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "inspect", "predict", "export", "runs", "stop", "eval", "sample", "backbones", "fetch-weights"])
def test_every_commands_help_prints(command, capsys):
    """Help text comes from the config (labels with a '%' in them, too): it must format."""
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# The CLI tells the truth: run states, stop, damaged files, untrainable datasets, links
# --------------------------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run_with_a_dead_worker(workspace, image_folder):
    import time

    from tl_core.config import DataConfig, RunConfig
    from tl_core.runs import RunStore

    run = RunStore(workspace).create(RunConfig(data=DataConfig(source=str(image_folder)), name="killed"))
    run.mark_running(pid=_dead_pid(), pid_created=time.time() - 5)  # its worker was killed since
    assert run.state == "running"
    return run


def test_runs_marks_a_run_whose_worker_is_gone_as_failed_and_can_delete_it(workspace, image_folder, capsys):
    ws = ["--workspace", str(workspace.root)]
    listed = _run_with_a_dead_worker(workspace, image_folder)
    assert main([*ws, "runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["state"]) for r in rows] == [(listed.id, "failed")]
    assert "unexpectedly" in rows[0]["error"]
    assert main([*ws, "runs", "--delete", listed.id]) == 0
    # Deleted straight away, without a listing first: the same rule applies.
    other = _run_with_a_dead_worker(workspace, image_folder)
    assert main([*ws, "runs", "--delete", other.id]) == 0
    assert not other.dir.exists()
    capsys.readouterr()
    assert main([*ws, "runs"]) == 0
    assert "No runs yet" in capsys.readouterr().out


def test_stop_on_a_run_whose_worker_is_gone_says_it_failed(workspace, image_folder, capsys):
    run = _run_with_a_dead_worker(workspace, image_folder)
    assert main(["--workspace", str(workspace.root), "stop", run.id, "--wait", "1"]) == 0
    assert "is failed; nothing to stop" in capsys.readouterr().out
    assert run.state == "failed" and not run.stop_requested()


@pytest.mark.slow
def test_stop_stops_a_run_that_another_cli_process_trains(workspace, image_folder, capsys):
    import time

    from tl_core.runs import RunStore

    proc = subprocess.Popen([sys.executable, "-m", "tl_core", "--workspace", str(workspace.root), "train",
                             str(image_folder), "--backbone", TINY, "--epochs", "500", "--batch-size", "4",
                             "--augment", "none",
                             "--no-feature-cache", "--name", "long"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:  # until its first epoch is done (a best checkpoint exists)
            runs = RunStore(workspace).list()
            if runs and runs[0].state == "running" and runs[0].status().best_epoch is not None:
                break
            if proc.poll() is not None:
                pytest.fail(proc.communicate()[1])
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.5)
        assert main(["--workspace", str(workspace.root), "stop", runs[0].id, "--wait", "60"]) == 0
        assert "is cancelled; its best checkpoint is kept" in capsys.readouterr().out
        assert proc.wait(timeout=60) == 0
        assert runs[0].state == "cancelled" and runs[0].checkpoint_path("best").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_a_damaged_checkpoint_is_one_line_for_every_command_that_loads_it(workspace, image_folder, tmp_path, capsys):
    ws = ["--workspace", str(workspace.root)]
    assert main([*ws, "train", str(image_folder), "--backbone", TINY, "--epochs", "1", "--augment", "none",
                 "--batch-size", "8"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    best = workspace.runs_dir / run_id / "checkpoints" / "best.pt"
    whole = best.read_bytes()
    image = str(image_folder / "red" / "1.jpg")
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a picture")
    assert main([*ws, "predict", run_id, str(not_an_image)]) == 2  # an unreadable image: one line too
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "notes.jpg" in err[0], err
    for argv in (["predict", run_id, str(image_folder)],  # a folder where an image file belongs
                 ["export", run_id, "--format", "safetensors", "--out", str(not_an_image / "bundle")]):
        assert main([*ws, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1, (argv, err)
        assert "Traceback" not in err
    for damage in (whole[: len(whole) // 2], b"", b"not a checkpoint at all"):
        best.write_bytes(damage)
        for argv in (["predict", run_id, image], ["export", run_id, "--format", "safetensors",
                                                 "--out", str(tmp_path / "bundle")],
                     ["eval", run_id, str(image_folder)]):
            assert main([*ws, *argv]) == 2, argv
            err = capsys.readouterr().err
            errors = [line for line in err.splitlines() if line.startswith("error: ")]  # not progress bars
            assert len(errors) == 1 and "damaged" in errors[0] and "Traceback" not in err, (argv, err)
            assert f"train --config {run_id}" in errors[0]


def test_inspect_exits_non_zero_when_the_dataset_cannot_be_trained_on(workspace, tmp_path, capsys):
    from tests.conftest import write_image_folder

    one_class = write_image_folder(tmp_path / "only_red", {"red": 10})
    ws = ["--workspace", str(workspace.root)]
    assert main([*ws, "inspect", str(one_class)]) == 1
    assert "problem: " in capsys.readouterr().out
    assert main([*ws, "inspect", str(one_class), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["errors"]
    two = write_image_folder(tmp_path / "two", {"red": 10, "blue": 10})
    assert main([*ws, "inspect", str(two)]) == 0


def test_links_out_of_the_dataset_folder_are_reported_and_skipped(workspace, tmp_path, capsys):
    from tests.conftest import write_image_folder

    root = write_image_folder(tmp_path / "data", {"red": 8, "blue": 8})
    outside = write_image_folder(tmp_path / "private", {"green": 5})
    (root / "red" / "secret.jpg").symlink_to(outside / "green" / "0.jpg")
    (root / "green").symlink_to(outside / "green", target_is_directory=True)
    (root / "blue" / "same.jpg").symlink_to(root / "blue" / "0.jpg")  # inside the folder: fine
    assert main(["--workspace", str(workspace.root), "inspect", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_counts"] == {"blue": 9, "red": 8}
    reasons = {item["path"]: item["reason"] for item in report["skipped"]}
    assert "outside the dataset folder" in reasons["red/secret.jpg"]
    assert "outside the dataset folder" in reasons["green"]
    assert main(["--workspace", str(workspace.root), "inspect", str(root)]) == 0
    assert "red/secret.jpg: link to a file outside the dataset folder" in capsys.readouterr().out
