"""``streamlit run`` with a cProfile of every script run, to see where the server's CPU goes.

Usage: python bench/profile_server.py PROFILE_DIR run app.py [streamlit run's options...]
       (bench/load.py --profile-dir DIR starts its server this way), then
       python bench/profile_server.py --report PROFILE_DIR [--top 25]

Each script run (a page's rerun or a fragment's) of every session is profiled in its own script
thread and written to ``PROFILE_DIR/<sequence>_<page>_<full|fragment>.prof`` (pstats format, CPU
time of that thread: ``time.thread_time``). Work outside the script threads (Streamlit's event loop
sending the messages) is not in them. ``--report`` prints, per page and kind, the runs' count and
their CPU seconds (sum and median), then the functions with the most cumulative time over all.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import re
import statistics
import sys
import threading
import time
from pathlib import Path


def _install(profile_dir: Path) -> None:
    from streamlit.runtime.scriptrunner import script_runner

    profile_dir.mkdir(parents=True, exist_ok=True)
    original = script_runner.ScriptRunner._run_script
    counter = itertools.count()
    lock = threading.Lock()

    def profiled(self, rerun_data) -> None:  # noqa: ANN001 - Streamlit's RerunData
        kind = "fragment" if rerun_data.fragment_id_queue else "full"
        page = re.sub(r"[^a-z0-9]+", "-", (rerun_data.page_name or "main").lower()).strip("-") or "main"
        profile = cProfile.Profile(time.thread_time)  # CPU of this thread only: others' work is not counted
        profile.enable()
        try:
            original(self, rerun_data)
        finally:
            profile.disable()
            with lock:
                n = next(counter)
            profile.dump_stats(profile_dir / f"{n:05d}_{page}_{kind}.prof")

    script_runner.ScriptRunner._run_script = profiled


def report(profile_dir: Path, top: int = 25) -> str:
    files = sorted(profile_dir.glob("*.prof"))
    groups: dict[str, list[float]] = {}
    for path in files:
        _, page, kind = path.stem.split("_", 2)
        groups.setdefault(f"{page} ({kind})", []).append(pstats.Stats(str(path)).total_tt)
    lines = ["| script run | count | CPU s sum | CPU s median |", "|---|---|---|---|"]
    for name, values in sorted(groups.items(), key=lambda item: -sum(item[1])):
        lines.append(f"| {name} | {len(values)} | {sum(values):.2f} | {statistics.median(values):.3f} |")
    if files:
        stats = pstats.Stats(*(str(p) for p in files), stream=_Lines(lines))
        stats.files = []  # not the list of every file read
        stats.sort_stats("cumulative").print_stats(top)
    return "\n".join(lines)


class _Lines:
    """A stream for pstats that appends to a list of lines."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.extend(text.rstrip("\n").split("\n"))

    def flush(self) -> None:
        pass


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--report":
        p = argparse.ArgumentParser()
        p.add_argument("--report", type=Path, required=True)
        p.add_argument("--top", type=int, default=25)
        args = p.parse_args()
        print(report(args.report, args.top))
        return
    profile_dir = Path(sys.argv[1])
    _install(profile_dir)
    from streamlit.web import cli

    sys.argv = ["streamlit", *sys.argv[2:]]
    cli.main()


if __name__ == "__main__":
    main()
