"""Live from the first seconds: time from Start to the first curve point, and to the end.

The default path (frozen mobilenet_v2, cached features, light augmentation, 10 epochs, batch 32)
on a few hundred ~0.2 MP photos, measured three ways in one run on the same data:

- eager (the baseline, the behaviour before lazy views): every augmented view's features
  (MAX_FEATURE_VIEWS) and the validation set's are computed before epoch 1, through the same
  functions (``EpochLoop._train_features`` asked for all views at once);
- lazy (now): epoch 1 computes one view and the validation features, each later epoch one more;
- shared: a second run with another head and learning rate on the same images, backbone and
  views, whose features the feature store already holds.

Each eager / lazy run starts from an empty feature store (the decoded images are cached for all,
after a warm-up run). Ratios are eager / lazy, measured alongside each other.

Usage: python bench/live.py [--per-class 120] [--rounds 1] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import machine, make_photos, publish  # noqa: E402  (bench/run.py: the photo maker, the machine line)

from tl_core import events as ev  # noqa: E402
from tl_core.config import DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.model.features import EVAL_VIEW, train_feature_view  # noqa: E402
from tl_core.model.registry import get_backbone  # noqa: E402
from tl_core.runs import RunStore  # noqa: E402
from tl_core.training.session import prepare_data  # noqa: E402
from tl_core.training.trainer import EpochLoop, train  # noqa: E402
from tl_core.workspace import Workspace  # noqa: E402


def eager_train_features(self: EpochLoop, epoch: int):
    """The old behaviour: every view and the validation features before the first epoch."""
    s, cache = self.session, self.session.features
    if not cache.train_views:
        views = list(range(cache.n_views))
        requests = [(s.data.train, train_feature_view(s.config.data.augment, k, s.config.train.seed)) for k in views]
        *train_feats, cache.val = self.features([*requests, (s.data.val, EVAL_VIEW)])
        cache.train_views = dict(zip(views, train_feats, strict=True))
    return cache.train_features(epoch)


def timed_run(ws: Workspace, cfg: RunConfig) -> tuple[float, float]:
    """Seconds from the train() call to the first EpochEnded, and to the end."""
    first: list[float] = []
    run = RunStore(ws).create(cfg)
    t0 = time.perf_counter()
    train(cfg, run, ws, subscribers=[lambda e: isinstance(e, ev.EpochEnded) and not first and
                                     first.append(time.perf_counter())])
    return first[0] - t0, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--per-class", type=int, default=120, help="photos per class (two classes)")
    p.add_argument("--rounds", type=int, default=1, help="eager/lazy pairs (alternating)")
    p.add_argument("--out", default=None, help="append the results to this Markdown file")
    args = p.parse_args()
    os.environ.setdefault("TL_STUDIO_OFFLINE", "1")
    lazy_train_features = EpochLoop._train_features
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ws = Workspace(tmp / "ws")
        folder = make_photos(tmp / "photos", args.per_class)
        base = RunConfig(data=DataConfig(source=str(folder)))  # every default: the path a new user takes
        n_images = 2 * args.per_class

        def fresh_store() -> None:
            shutil.rmtree(ws.cache_dir / "features", ignore_errors=True)

        # Warm-up: ingest and decode once, as a run does (both ways share the decoded images).
        prepare_data(base, ws, get_backbone(base.model.backbone).preprocess)
        results: dict[str, list[tuple[float, float]]] = {"eager": [], "lazy": []}
        for _ in range(args.rounds):
            for way, method in (("eager", eager_train_features), ("lazy", lazy_train_features)):
                fresh_store()
                EpochLoop._train_features = method
                try:
                    results[way].append(timed_run(ws, base))
                finally:
                    EpochLoop._train_features = lazy_train_features
        # The lazy run above left every view in the store: another head and learning rate.
        shared = timed_run(ws, RunConfig(data=base.data, model=ModelConfig(head=HeadConfig(kind="mlp")),
                                         train=TrainConfig(lr=3e-3)))

    def med(way: str, i: int) -> float:
        return statistics.median(r[i] for r in results[way])
    rows = [
        ("Start -> first curve point (s)", f"{med('eager', 0):.1f}", f"{med('lazy', 0):.1f}",
         f"{med('eager', 0) / med('lazy', 0):.2f}x sooner"),
        ("Start -> end of run (s)", f"{med('eager', 1):.1f}", f"{med('lazy', 1):.1f}",
         f"{med('lazy', 1) / med('eager', 1):.2f} of eager"),
        ("second run, other head + lr, features stored: first point / end (s)", "-",
         f"{shared[0]:.1f} / {shared[1]:.1f}", f"{med('eager', 0) / shared[0]:.0f}x sooner than eager"),
    ]
    lines = ["| measure | eager (before) | lazy (now) | ratio |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    report = (f"\n## {time.strftime('%Y-%m-%d')} — live from the first seconds — {machine()}; nproc {os.cpu_count()}\n"
              f"default path: frozen mobilenet_v2, cached features, light augmentation, 10 epochs, batch 32; "
              f"{n_images} photos 512x384 (val 20%), {args.rounds} eager/lazy pair(s), median\n\n"
              + "\n".join(lines) + "\n")
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
