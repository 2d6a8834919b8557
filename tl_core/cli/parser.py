"""``python -m tl_core``: the engine from the command line. The parser (its commands and their
options) and ``main``, which runs the command's handler (in ``tl_core.cli.*_commands``).

Errors a user can cause print one line (no traceback) and exit with status 2. ``inspect`` exits
with status 1 when the dataset cannot be trained on (its problems are printed).
"""

from __future__ import annotations

import argparse
import sys

from tl_core.cli.data_commands import cmd_dataset, cmd_inspect, cmd_sample
from tl_core.cli.model_commands import cmd_backbones, cmd_fetch_weights, cmd_weights_import
from tl_core.cli.options import FIELD_OPTIONS, add_field_option
from tl_core.cli.run_commands import cmd_eval, cmd_export, cmd_predict, cmd_project, cmd_runs, cmd_stop
from tl_core.cli.server_commands import cmd_cleanup, cmd_settings
from tl_core.cli.train_command import cmd_train
from tl_core.errors import TLError


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tl_core", description="TL Studio engine: transfer learning on your images.")
    p.add_argument("--workspace", help="workspace folder (default: $TL_STUDIO_HOME or ~/.tl_studio)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("inspect", help="health report of a dataset (folder, zip or csv)")
    s.add_argument("data")
    s.add_argument("--json", action="store_true")
    _add_sheet_options(s)
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("backbones", help="list backbones and whether their weights are on this machine")
    s.add_argument("--weights-dir", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_backbones)

    s = sub.add_parser("train", help="train a run on DATA (or again from a saved --config)")
    s.add_argument("data", nargs="?", default="", help="folder of class folders, a zip of them, or a path,label csv")
    s.add_argument("--name", default="")
    s.add_argument("--resume", metavar="RUN", help="resume RUN from its last checkpoint (DATA not needed)")
    s.add_argument("--config", metavar="RUN",
                   help="train a saved run (its id, run folder or config.json) again as a new run: exactly, "
                        "except for the options given on this command line, which override it (DATA "
                        "replaces its dataset)")
    for flag, (section, name) in FIELD_OPTIONS.items():
        add_field_option(s, flag, section, name)
    s.add_argument("--groups", default="", help="comma-separated trainable groups (with --freeze groups)")
    s.add_argument("--lr-range", default="", help="discriminative learning rates LOW,HIGH")
    s.add_argument("--class-words", action="append", metavar="CLASS=WORDS",
                   help="with --head zero_shot: the words for one class's prompts, several comma-separated "
                        "(repeat the option per class; a class not named uses its own name)")
    _add_sheet_options(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="metrics of RUN on its validation split or on DATA")
    s.add_argument("run")
    s.add_argument("data", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("predict", help="top-k predictions of RUN for image files")
    s.add_argument("run")
    s.add_argument("images", nargs="+")
    s.add_argument("--top-k", type=int, default=3)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("stop", help="stop RUN (queued or training) after its current batch; the best checkpoint is kept")
    s.add_argument("run")
    s.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the run to stop (default: %(default)s)")
    s.set_defaults(func=cmd_stop)

    s = sub.add_parser("runs", help="list runs by name (or delete one that is not training)")
    s.add_argument("--delete", metavar="RUN")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser("export", help="export RUN as a bundle (TorchScript, ONNX, safetensors, predict.py)")
    s.add_argument("run")
    s.add_argument("--format", nargs="+", default=["torchscript", "onnx", "safetensors"],
                   choices=["torchscript", "onnx", "safetensors"])
    s.add_argument("--out", default=None)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("project", help="a project (datasets, runs, best checkpoints) as one zip to take to "
                                       "another TL Studio, and back")
    verbs = s.add_subparsers(dest="project_command", required=True)
    s = verbs.add_parser("export", help="write the workspace's datasets and runs (or those named) to OUT (.zip)")
    s.add_argument("out")
    s.add_argument("--run", action="append", default=None, help="a run id to export (repeat; brings its dataset)")
    s.add_argument("--dataset", action="append", default=None, help="a dataset id to export (repeat)")
    s.set_defaults(func=cmd_project)
    s = verbs.add_parser("import", help="add the datasets and runs of a project zip to the workspace (checked first)")
    s.add_argument("archive")
    s.set_defaults(func=cmd_project)

    s = sub.add_parser("fetch-weights", help="download backbones' pretrained weights (torchvision, timm, open_clip) for offline use later")
    s.add_argument("names", nargs="*", help="backbone names (default: all)")
    s.set_defaults(func=cmd_fetch_weights)

    s = sub.add_parser("weights", help="add torchvision .pth weights files to this machine (checked first)")
    weights = s.add_subparsers(dest="weights_command", required=True)
    s = weights.add_parser("import", help="check each .pth file (name, sha256, safe load, keys and shapes) and add "
                                          "those that pass where the weights lookup reads them")
    s.add_argument("paths", nargs="+", metavar="PATH", help="a .pth file, or a folder of them")
    s.set_defaults(func=cmd_weights_import)

    s = sub.add_parser("sample", help="write the built-in sample dataset (coloured shapes) to DEST")
    s.add_argument("dest")
    s.add_argument("--per-class", type=int, default=40)
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("cleanup", help="delete the least recently used caches of all workspaces over the "
                                       "cache budget (never a training job's) and stale temporary files")
    s.add_argument("--budget-gb", type=float, default=None, help="instead of the cache_budget_gb setting")
    s.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    s.set_defaults(func=cmd_cleanup)

    s = sub.add_parser("settings", help="the server's settings (limits, cleanup) in force and where each comes from")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_settings)

    s = sub.add_parser("dataset", help="history, undo and de-duplication of an ingested dataset (DIR holds "
                                       "dataset.json); each fix is a new version, image files are never deleted")
    verbs = s.add_subparsers(dest="dataset_command", required=True)
    for verb, text in (("history", "the versions and what changed in each"),
                       ("undo", "back to the version before the last change"),
                       ("dedupe", "drop identical copies (keep the first of each), and near-identical ones with --near")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("dir")
        v.set_defaults(func=cmd_dataset)
        if verb == "dedupe":
            v.add_argument("--near", action="store_true", help="also near-identical images (perceptual hashes)")
            v.add_argument("--threshold", type=int, default=None,  # neardup's, imported only when used
                           help="bits of 64 two hashes may differ by to count as near-identical (default: 6)")
    return p


def _add_sheet_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-column", default="", metavar="COLUMN",
                        help="spreadsheet DATA (.csv/.xlsx, alone or in the zip or folder): the column with each "
                             "image's path or file name (default: one named image, path or file)")
    parser.add_argument("--label-column", default="", metavar="COLUMN",
                        help="spreadsheet: the column with the class (default: one named label or class)")
    parser.add_argument("--group-column", default="", metavar="COLUMN",
                        help="spreadsheet: images sharing its value (a patient, a site) stay in one split "
                             "(default: one named group, patient, subject or site)")
    parser.add_argument("--split-column", default="", metavar="COLUMN",
                        help="spreadsheet: train/val/test as given (default: one named split)")


def _given_options(argv: list[str]) -> set[str]:
    """The ``train`` options typed on the command line (abbreviations included), as argparse dests:
    ``--config`` keeps the saved value of every option not given, even one equal to its default."""
    probe = make_parser()
    for action in _all_actions(probe):
        action.default = argparse.SUPPRESS  # an option not given then leaves no attribute
    args, _ = probe.parse_known_args(argv)
    return set(vars(args)) - {"command", "func", "workspace", "data"}


def _all_actions(parser: argparse.ArgumentParser):
    # argparse has no public walk over sub-commands' options; _actions has been stable since 3.2
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser().parse_args(argv)
    if args.command == "train":
        if not args.data and not args.resume and not args.config:
            print("error: give a DATA folder, zip or csv to train on (or --config FILE, or --resume RUN)",
                  file=sys.stderr)
            return 2
        if args.resume and args.config:
            print("error: --resume trains a run on with its own config; leave out --config", file=sys.stderr)
            return 2
        args.given_options = _given_options(argv) if args.config else set()
    try:
        return args.func(args)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path given on the command line: missing, unreadable, not a folder, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
