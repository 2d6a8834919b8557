"""Shared fixtures: a temporary workspace, synthetic image folders, and real sample photos."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests never touch the network or the user's own workspace.
os.environ.setdefault("TL_STUDIO_OFFLINE", "1")

# The tiny test backbone (tests/tiny_backbone.py) is registered through the plugin variable, set
# before tl_core is first imported: the test process and every worker it starts (jobs, torchrun
# ranks, Ray jobs) register it the same way. A developer's own plugins stay.
TINY_BACKBONE_MODULE = "tests.tiny_backbone"
TINY_FOUNDATION_MODULE = "tests.tiny_foundation"  # tiny timm and open_clip backbones
_plugins = [m.strip() for m in os.environ.get("TL_STUDIO_BACKBONE_PLUGINS", "").split(",") if m.strip()]
os.environ["TL_STUDIO_BACKBONE_PLUGINS"] = ",".join(
    _plugins + [m for m in (TINY_BACKBONE_MODULE, TINY_FOUNDATION_MODULE) if m not in _plugins])

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}


def synthetic_image(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A noisy image dominated by one colour, with a random darker rectangle: easy but not trivial."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.array(colour, dtype=np.float32)[None, None, :]
    arr = base + rng.normal(0, 25, size=(h, w, 3))
    x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
    arr[y0:y0 + h // 3, x0:x0 + w // 3] *= 0.5
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def wait_for(predicate, timeout: float = 120.0, every: float = 0.2):
    """``predicate()``'s first truthy value, polled every ``every`` s; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def write_image_folder(root: Path, classes: dict[str, int], size=(64, 48), fmt: str = "JPEG") -> Path:
    """root/<class>/<i>.jpg for each class name (a COLOURS key) and count."""
    for c_index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        colour = COLOURS.get(name, tuple(int(v) for v in np.random.default_rng(c_index).integers(0, 255, 3)))
        for i in range(count):
            ext = "jpg" if fmt == "JPEG" else fmt.lower()
            synthetic_image(colour, seed=1000 * c_index + i, size=size).save(root / name / f"{i}.{ext}", fmt)
    return root


@pytest.fixture(scope="session", autouse=True)
def tiny_backbone_weights(tmp_path_factory) -> Path:
    """The tiny backbone's "pretrained" weights file, in a ``TL_STUDIO_WEIGHTS`` folder of the
    session (the lookup's second place; workers inherit the variable). Its path."""
    from tests import tiny_backbone
    from tl_core.model.weights_lookup import ENV_WEIGHTS

    path = tiny_backbone.save_weights(tmp_path_factory.mktemp("weights"))
    before = os.environ.get(ENV_WEIGHTS)
    os.environ[ENV_WEIGHTS] = str(path.parent)
    yield path
    if before is None:
        os.environ.pop(ENV_WEIGHTS, None)
    else:
        os.environ[ENV_WEIGHTS] = before


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A 3-class ImageFolder of 12 small JPEGs per class."""
    return write_image_folder(tmp_path / "images", {"red": 12, "green": 12, "blue": 12})


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch):
    from tl_core.workspace import Workspace

    monkeypatch.setenv("TL_STUDIO_HOME", str(tmp_path / "home"))
    return Workspace(tmp_path / "home")


def train_tiny_run(root: Path, backbone: str | None = None) -> Path:
    """A real tiny run under ``root`` (its own workspace): a feature extractor (the tiny test
    backbone unless ``backbone`` names another), 5 epochs on 2 colour classes, its dataset ingested
    in the workspace. Its folder."""
    from tests.tiny_backbone import NAME as TINY
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.data import ingest
    from tl_core.data.catalog import DatasetCatalog
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train
    from tl_core.workspace import Workspace

    workspace = Workspace(root)
    folder = write_image_folder(root / "src", {"red": 10, "blue": 10})
    dest = DatasetCatalog(workspace).new_dir("colours")
    ingest(folder, dest)
    config = RunConfig(data=DataConfig(source=str(dest), dataset_dir=str(dest), val_fraction=0.3, augment="none"),
                       model=ModelConfig(backbone=backbone or TINY),
                       train=TrainConfig(epochs=5, batch_size=8, lr=1e-2, schedule="constant"), name="tiny")
    run = RunStore(workspace).create(config)
    train(config, run, workspace)
    return run.dir


@pytest.fixture(scope="session")
def trained_run_dir(tmp_path_factory) -> Path:
    """The tiny run, trained once per test session (read only: tests copy it, see tests/app/conftest.py)."""
    return train_tiny_run(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def tiny_vit_weights_dir(tmp_path_factory) -> Path:
    """A weights folder with the tiny timm ViT's "pretrained" weights (``tests/tiny_foundation.py``),
    apart from the session's: set ``TL_STUDIO_WEIGHTS`` to it where a test needs them, so that other
    tests do not find one more backbone with weights."""
    from tests.tiny_foundation import save_weights

    folder = tmp_path_factory.mktemp("vit_weights")
    save_weights("tiny_vit", folder)
    return folder


@pytest.fixture(scope="session")
def trained_vit_run_dir(tmp_path_factory, tiny_vit_weights_dir) -> Path:
    """The tiny run on the tiny timm ViT, from its "pretrained" weights (``tiny_vit_weights_dir``);
    trained once per session, read only."""
    from tl_core.model.weights_lookup import ENV_WEIGHTS

    before = os.environ.get(ENV_WEIGHTS)
    os.environ[ENV_WEIGHTS] = str(tiny_vit_weights_dir)
    try:
        return train_tiny_run(tmp_path_factory.mktemp("trained_vit"), backbone="tiny_vit")
    finally:
        if before is None:
            os.environ.pop(ENV_WEIGHTS, None)
        else:
            os.environ[ENV_WEIGHTS] = before


@pytest.fixture(scope="session")
def real_photos() -> dict[str, Image.Image]:
    """Real photos shipped with scikit-image: a cat and a cup of coffee."""
    from skimage import data

    return {"chelsea": Image.fromarray(data.chelsea()), "coffee": Image.fromarray(data.coffee())}


E2E_DIR = Path(__file__).parent / "e2e"
# The browser test files that take longest, longest first: with pytest-xdist they start first, so
# that the many short tests fill the workers' last minutes instead of one long file running alone
# at the end. A browser file not listed runs after these, before the other tests.
LONGEST_E2E_FIRST = ("test_first_run", "test_foundation_browser", "test_walkthrough", "test_predict_export",
                     "test_classroom_browser",
                     "test_compare", "test_runs_and_code", "test_load_smoke", "test_sheets_browser")
# Test files whose tests share an expensive fixture made once per module (a trained or exported
# run, a Ray cluster): kept on one worker, so that it is made once rather than once per worker.
KEPT_TOGETHER = ("test_export", "test_explain", "test_ray_backend")


def _kept_together(path: str) -> bool:
    """Whether the tests of the file at ``path`` (relative to the root, as in a node id) run on one
    worker, in their order: every browser test file (its tests share a server and build on each
    other's sessions), and the files in KEPT_TOGETHER."""
    return path.startswith("tests/e2e/") or Path(path).stem in KEPT_TOGETHER


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` (``make test``), done here: a file that must stay on one worker is one
    unit of work, every other test its own, handed out in the order of the collection (below); and
    every other worker takes the browser files first, the others everything else first, so that a
    browser test's waits (pages, app servers, jobs) overlap the CPU-bound tests instead of another
    browser test's. A worker whose own kind has run out takes the other kind.

    pytest-xdist's own loadgroup groups tests by a suffix it writes into each test's node id; under
    pytest 9 that write no longer changes the node id, so every test was scheduled alone (a
    browser file's tests ran on both workers, a module's fixture was made on each). Its default
    reordering by the number of tests in a unit would also send the one-test browser files last."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if _kept_together(path) else nodeid

        def _assign_work_unit(self, node) -> None:
            browsers = list(self.assigned_work).index(node) % 2 == 0
            scope = next((s for s in self.workqueue if s.startswith("tests/e2e/") == browsers), None)
            if scope is not None:
                self.workqueue.move_to_end(scope, last=False)  # the unit the parent hands out next
            super()._assign_work_unit(node)

    config.option.loadscopereorder = False
    return FileGroups(config, log)


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e/ drives a real browser: marked ``e2e`` (and ``-m "not e2e"``
    leaves it out) by its folder, not file by file. Tests marked ``gpu`` need CUDA: elsewhere they
    skip with the reason, rather than fail.

    The order, for pytest-xdist (``make test`` runs ``-n auto --dist loadgroup``; see
    pytest_xdist_make_scheduler): the browser files first, the longest first, then the files kept
    together, then the rest; each file keeps its own order."""
    def rank(item) -> tuple[int, int]:
        path = Path(str(item.path))
        if E2E_DIR in path.parents:
            return (0, LONGEST_E2E_FIRST.index(path.stem) if path.stem in LONGEST_E2E_FIRST
                    else len(LONGEST_E2E_FIRST))
        return (1, 0) if path.stem in KEPT_TOGETHER else (2, 0)

    for item in items:
        if E2E_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)
    items.sort(key=rank)  # stable
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
    for item in gpu_items:
        item.add_marker(skip)


TINY_BACKBONES = ("tiny_cnn", "tiny_vit", "tiny_effnet", "tiny_clip")  # every test backbone


@pytest.fixture(scope="session")
def tiny_weights_folder(tiny_backbone_weights, tmp_path_factory) -> Path:
    """A weights folder holding the "pretrained" weights of every tiny backbone (tiny_cnn's file and
    seeded ones for tiny_vit, tiny_effnet and tiny_clip), written once per test session."""
    import shutil

    from tests import tiny_foundation

    folder = tmp_path_factory.mktemp("all_tiny_weights")
    shutil.copy(tiny_backbone_weights, folder / tiny_backbone_weights.name)
    for name in TINY_BACKBONES[1:]:
        tiny_foundation.save_weights(name, folder)
    return folder


@pytest.fixture
def all_tiny_weights(tiny_weights_folder, monkeypatch) -> Path:
    """``TL_STUDIO_WEIGHTS`` names ``tiny_weights_folder`` for this test: every tiny backbone's
    weights are on this machine (workers started now inherit it). The folder."""
    from tl_core.model.weights_lookup import ENV_WEIGHTS

    monkeypatch.setenv(ENV_WEIGHTS, str(tiny_weights_folder))
    return tiny_weights_folder
