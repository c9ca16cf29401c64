"""Regenerate ``screenshots/``: the real dashboard on a real hung actor tree.

    python scripts/screenshots.py [--out screenshots] [--no-png]

The dashboard runs in launch mode (headless, at a fixed terminal size) on
the bundled demo tree (`tractor_diag.demo_tree`: a leaf stuck in a sync
``time.sleep``, a parent waiting forever on a child that ignores SIGINT, a
runaway, a zombie), is driven like a person would drive it, and each view is
saved as SVG with Textual's own screenshot export:

- ``dash-main``        the tree, the runaway detected, db_pool selected with
                       its Python stack (py-spy) in the detail pane;
- ``dash-task-tree``   the trio task tree of ``db_pool`` (SIGUSR1): its task
                       running, wedged in ``time.sleep``;
- ``dash-why``         the verdicts of the tree (``w`` on the root): root
                       cause first, the wait-for chain, evidence, what to do;
                       in the tree, each chain drawn on its rows (lit: the
                       root is in them);
- ``dash-log``         the launched program's output in the Log tab;
- ``dash-reap``        the confirm dialog of reaping the ``gateway`` subtree.

Each SVG is also converted to PNG with cairosvg when it is installed
(``pip install cairosvg``; it needs the system's libcairo). Only needed when
someone regenerates the screenshots, never in CI. The tree runs with its own
``XDG_RUNTIME_DIR`` and is stopped (SIGINT, grace, SIGKILL) at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

SIZE = (170, 46)
REPO = Path(__file__).resolve().parent.parent


async def until(pred, timeout: float, pilot, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await pilot.pause(0.1)


def pid_of(app, name: str) -> int | None:
    snap = app.snapshot
    if snap is None:
        return None
    for entry in snap.entries.values():
        actor = entry.proc.actor
        if actor is not None and actor.name == name and entry.bucket != "zombie":
            return entry.proc.pid
    return None


async def shoot(out: Path) -> list[Path]:
    from tractor_diag.tui.app import DashApp
    from tractor_diag.tui.dialogs import ConfirmScreen

    names = ("gateway", "db_pool", "cache", "supervisor", "stubborn", "hot_loop", "flaky_parent")
    app = DashApp(launch=[sys.executable, "-m", "tractor_diag.demo_tree"],
                  interval=1.0, grace=1.0, strays=False)
    saved: list[Path] = []

    def save(name: str) -> None:
        path = out / f"{name}.svg"
        app.save_screenshot(path.name, str(out))
        saved.append(path)
        print(f"wrote {path}")

    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: all(pid_of(app, n) for n in names), 30, pilot, "the demo tree")
        await until(lambda: any(e.state == "runaway" for e in app.snapshot.entries.values()),
                    15, pilot, "the runaway to be detected")
        await until(lambda: any(e.bucket == "zombie" for e in app.snapshot.entries.values()),
                    10, pilot, "the zombie")

        db_pool = pid_of(app, "db_pool")
        app.proc_tree.select_pid(db_pool)
        await pilot.press("s")
        await until(lambda: "stacks" in app._extras.get(db_pool, {}), 30, pilot, "py-spy")
        await pilot.pause(0.5)
        save("dash-main")

        await pilot.press("t")
        await until(lambda: "tasks" in app._extras.get(db_pool, {}), 15, pilot, "task tree")
        await pilot.pause(0.5)
        save("dash-task-tree")

        root = app.snapshot.roots[0]
        app.proc_tree.select_pid(root)
        await pilot.press("w")
        await until(lambda: "why" in app._extras.get(root, {}), 60, pilot, "the verdicts")
        await until(lambda: app.proc_tree.marks, 10, pilot, "the chains in the tree")
        await pilot.pause(0.5)
        save("dash-why")

        await pilot.press("l")
        await pilot.pause(0.5)
        save("dash-log")
        await pilot.press("l")

        app.proc_tree.select_pid(pid_of(app, "gateway"))
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, ConfirmScreen), 15, pilot, "the reap dialog")
        await pilot.pause(0.5)
        save("dash-reap")
        await pilot.press("n")

        await pilot.press("q")
        await until(lambda: not app.is_running, 20, pilot, "quit")
    if app.supervisor is not None:
        from tractor_diag.demo import sweep_sockets

        sweep_sockets(app.supervisor.seen_pids)
    return saved


def to_png(svgs: list[Path]) -> list[Path]:
    try:
        import cairosvg
    except (ImportError, OSError) as exc:
        print(f"no PNGs: cairosvg is not usable here ({exc}); pip install cairosvg", file=sys.stderr)
        return []
    pngs = []
    for svg in svgs:
        png = svg.with_suffix(".png")
        cairosvg.svg2png(url=str(svg), write_to=str(png), output_width=1800)
        pngs.append(png)
        print(f"wrote {png}")
    return pngs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "screenshots"), help="output directory")
    parser.add_argument("--no-png", action="store_true", help="SVG only")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xdg = tempfile.mkdtemp(prefix="tdx-shots-", dir="/tmp")
    os.chmod(xdg, 0o700)
    os.environ["XDG_RUNTIME_DIR"] = xdg
    try:
        svgs = asyncio.run(shoot(out))
    finally:
        shutil.rmtree(xdg, ignore_errors=True)
    if not args.no_png:
        to_png(svgs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
