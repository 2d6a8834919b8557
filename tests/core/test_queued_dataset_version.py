"""Review: a run records the dataset version it was started on (``DataConfig.dataset_version``,
set when it is queued); a fix made while it waits in the queue must not change what it trains on."""

from __future__ import annotations

from tl_core.config import DataConfig, RunConfig
from tl_core.data import fixes, ingest
from tl_core.data.catalog import DatasetCatalog
from tl_core.jobs.launch import with_dataset_version
from tl_core.training.session import load_dataset
from tl_core.workspace import Workspace


def test_a_queued_run_trains_on_the_version_it_recorded(tmp_path):
    from tests.conftest import write_image_folder

    ws = Workspace(tmp_path / "ws")
    dest = DatasetCatalog(ws).new_dir("colours")
    ds = ingest(write_image_folder(tmp_path / "src", {"red": 3, "blue": 3}), dest)
    config = with_dataset_version(RunConfig(data=DataConfig(source=str(dest), dataset_dir=str(dest))))
    assert config.data.dataset_version == 1
    fixes.remove(dest, [ds.records[0].path], reason="a fix while the run waits in the queue")  # version 2
    trained_on = load_dataset(config, ws)
    assert trained_on.version == 1 and [r.path for r in trained_on.records] == [r.path for r in ds.records]
    # a run started now records version 2 and trains on it
    now = with_dataset_version(config)
    assert now.data.dataset_version == 2 and len(load_dataset(now, ws).records) == len(ds.records) - 1


def test_a_version_that_is_not_a_number_names_no_file(tmp_path):
    """A config file says anything (an opened project's): '../x' must not become versions/../x.json."""
    import dataclasses

    from tests.conftest import write_image_folder

    ws = Workspace(tmp_path / "ws")
    dest = DatasetCatalog(ws).new_dir("colours")
    ds = ingest(write_image_folder(tmp_path / "src", {"red": 2, "blue": 2}), dest)
    fixes.remove(dest, [ds.records[0].path], reason="a fix")  # version 2
    config = RunConfig(data=DataConfig(source=str(dest), dataset_dir=str(dest)))
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset_version="../../1"))
    assert load_dataset(config, ws).version == 2
