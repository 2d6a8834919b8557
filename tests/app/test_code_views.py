"""'Show the code' on the Train page (the current settings) and the Results page (a run's saved config)."""

from __future__ import annotations

import shlex

from tests.app.conftest import no_exceptions


def shown_code(at) -> tuple[str, str]:
    """The command and the script in the page's 'Show the code' expander."""
    (expander,) = [e for e in at.expander if e.label == "Show the code"]
    blocks = {block.language: block.value for block in expander.code}
    return blocks["bash"], blocks["python"]


def test_train_page_shows_the_command_and_script_of_the_current_settings(app, tiny_dataset):
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/2_model.py").run()
    app.selectbox(key="backbone_pick").set_value("resnet18").run()
    no_exceptions(app)
    app.switch_page("pages/3_train.py").run()
    app.number_input(key="epochs").set_value(3).run()
    app.text_input(key="run_name").set_value("it's mine").run()
    no_exceptions(app)

    command, script = shown_code(app)
    argv = shlex.split(command.replace("\\\n", ""))
    assert argv[argv.index("--backbone") + 1] == "resnet18"
    assert argv[argv.index("--epochs") + 1] == "3"
    assert argv[argv.index("--name") + 1] == "it's mine"
    assert argv[4].endswith(tiny_dataset)  # the dataset's folder
    compile(script, "train.py", "exec")
    assert "models.resnet18(weights=weights)" in script and "EPOCHS = 3" in script
    assert "CLASSES = ['blue', 'red']" in script
    assert "tl_core" not in script.replace("TL Studio", "")
    (download,) = [b for b in app.get("download_button") if b.proto.label == "Download train.py"]
    assert download is not None


def test_results_page_shows_the_code_of_the_selected_run(app, session_workspace, tiny_dataset):
    from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
    from tl_core.data.catalog import DatasetCatalog
    from tl_core.runs import RunStore

    path = str(DatasetCatalog(session_workspace).path(tiny_dataset))
    config = RunConfig(data=DataConfig(source=path, dataset_dir=path),
                       model=ModelConfig(backbone="efficientnet_b0"),
                       freeze=FreezePlan(mode="last_n", last_n=2, lr_range=(1e-5, 1e-3)),
                       train=TrainConfig(optimizer="sgd", schedule="onecycle"), name="fine-tune")
    run = RunStore(session_workspace).create(config)  # saved, never started: the code is there all the same
    run.write_classes(["blue", "red"])

    app.switch_page("pages/4_results.py").run()
    no_exceptions(app)
    command, script = shown_code(app)
    assert "--backbone efficientnet_b0" in command and "--lr-range 1e-05,0.001" in command
    compile(script, "train.py", "exec")
    assert "GROUP_LR = {" in script and "torch.optim.SGD(" in script and "OneCycleLR" in script
