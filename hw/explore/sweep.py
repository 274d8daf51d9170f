"""The sweep loop: skip the points finished earlier, keep the engine's slots busy with the rest, save each point's
row as it comes back (``DIR/points/POINT.json``, written whole), and show progress with an estimate of the time
left on standard error. An interrupt stops the engine and keeps every point finished so far, so a rerun resumes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hw.spec.outputs import atomic_file

from .points import failed_row

__all__ = ["run_sweep", "Progress", "finished_row"]


def finished_row(points_dir: Path, task: dict) -> dict | None:
    """The row of ``task`` saved by an earlier run with the same inputs (its ``key``), or None."""
    path = points_dir / f"{task['point']}.json"
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return row if row.get("key") == task["key"] and row.get("stage") != "worker" else None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A progress line: points done of the total, the points running and for how long, the time left (the mean
    time of the points run so far, times the points left, over the slots). Redrawn in place on a terminal, one
    line per event otherwise."""

    def __init__(self, total: int, done: int, slots: int, stream=None):
        self.total, self.done, self.slots = total, done, slots
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.durations: list[float] = []

    def eta(self, left: int) -> str:
        if not self.durations:
            return "time left: estimating"
        mean = sum(self.durations) / len(self.durations)
        return f"about {_duration(mean * left / self.slots)} left"

    def line(self, running: dict[str, float], left: int) -> str:
        now = time.monotonic()
        width = 20
        filled = width * self.done // max(self.total, 1)
        names = ", ".join(f"{name} ({_duration(now - start)})" for name, start in running.items())
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} | "
                f"{'running ' + names if names else 'idle'} | {self.eta(left)}")

    def finished(self, row: dict, left: int) -> None:
        self.done += 1
        self.durations.append(row.get("seconds", 0.0))
        what = "ok" if row["status"] == "ok" else f"FAILED ({row['stage']}: {row['error'][:120]})"
        self._print(f"  point {row['point']}: {what} in {_duration(row.get('seconds', 0.0))}", final=True)

    def draw(self, running: dict[str, float], left: int, force: bool = False) -> None:
        line = self.line(running, left)
        if self.tty:
            self._print(line, final=False)
        elif force:
            self._print(line, final=True)

    def _print(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _collect(engine, handle, task: dict) -> dict:
    try:
        return engine.result(handle)
    except Exception as e:           # noqa: BLE001 - a worker that died: the point failed, the sweep goes on
        return failed_row(task, "worker", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")


def run_sweep(tasks: list[dict], out: Path, engine, say) -> tuple[list[dict], dict]:
    """Run ``tasks`` on ``engine``; (rows in task order, counts of points run and skipped)."""
    points_dir = out / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    rows = {t["point"]: row for t in tasks if (row := finished_row(points_dir, t)) is not None}
    earlier = set(rows)
    queue = [t for t in tasks if t["point"] not in rows]
    say(f"{len(tasks)} points: {len(rows)} finished earlier (skipped), {len(queue)} to run on {engine.name}")
    progress = Progress(len(tasks), len(rows), engine.slots)
    running: dict[str, tuple] = {}
    try:
        while queue or running:
            while queue and len(running) < engine.slots:
                task = queue.pop(0)
                running[task["point"]] = (engine.submit(task), task, time.monotonic())
                progress.draw({n: s for n, (_, _, s) in running.items()}, len(queue) + len(running), force=True)
            for name, (handle, task, _) in list(running.items()):
                if engine.done(handle):
                    del running[name]
                    row = _collect(engine, handle, task)
                    with atomic_file(points_dir / f"{name}.json") as scratch:
                        scratch.write_text(json.dumps(row, indent=1) + "\n")
                    rows[name] = row
                    progress.finished(row, len(queue) + len(running))
            progress.draw({n: s for n, (_, _, s) in running.items()}, len(queue) + len(running))
            time.sleep(0.2)
    except BaseException:
        engine.stop()
        raise
    engine.close()
    ran = [rows[t["point"]] for t in tasks if t["point"] not in earlier]
    cached = sum(bool(r.get("build_cached") and r.get("compile_cached")) for r in ran)
    return [rows[t["point"]] for t in tasks], {"skipped": len(earlier), "run": len(ran), "cached": cached}
