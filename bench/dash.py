"""What does the dashboard cost on a 200-process actor tree?

A real tree of 200 processes is built on this box: a python root, 10
"spawners" with 19 leaves each, every one titled like a current-runtime
actor (``_subactor[<name>@<pid>]``: a ``cat`` started with ``exec -a``,
blocked reading a pipe, about 1 MB each, so the tree costs the box little).

``tractor-diag dash ROOT --interval 1`` then runs as a real program in a
real pty (160x50, what a person would see) and is measured from outside:

- first frame: from spawning the process until its output shows the tree
  (the label of the first spawner), Python start-up and imports included;
- CPU: ``utime + stime`` of the dashboard process (all its threads: the
  sampler's /proc passes run in a worker thread) over a window of
  ``BENCH_DASH_SECONDS`` (default 20) after a 3 s warm-up, as % of one core;
- RSS at the end of the window (and the peak, VmHWM).

Baselines measured in the same run, the same way:

- an idle Textual app (Header, a Static, Footer) in the same pty: what
  Textual itself costs doing nothing;
- the bare sampler (`Sampler.run` at 1 s on the same tree, no UI), for the
  share of the CPU that is /proc sampling rather than rendering.

Targets (issue 6): dash CPU <= 5 % of one core, first frame <= 1.5 s,
RSS <= 120 MB.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

SPAWNERS = 10
LEAVES = 19  # per spawner: 1 + 10 + 190 = 201 processes with the root
WINDOW = float(os.environ.get("BENCH_DASH_SECONDS", "20"))
WARMUP = 3.0
SIZE = (50, 160)  # rows, columns

_ROOT = r"""
import signal, subprocess, sys
spawners, leaves = int(sys.argv[1]), int(sys.argv[2])
script = ('exec 3<&0; i=$1; n=$2; j=0; '
          'while [ $j -lt $n ]; do '
          '( exec -a "_subactor[leaf_${i}_${j}@$BASHPID]" cat <&3 ) & j=$((j+1)); done; '
          'exec -a "_subactor[spawner_${i}@$$]" cat <&3')
kids = [subprocess.Popen(["bash", "-c", script, "spawner", str(i), str(leaves)],
                         stdin=subprocess.PIPE) for i in range(spawners)]
print("ok", flush=True)
signal.pause()
"""

_IDLE_TEXTUAL = r"""
from textual.app import App
from textual.widgets import Footer, Header, Static

class Idle(App):
    BINDINGS = [("q", "quit", "Quit")]
    def compose(self):
        yield Header()
        yield Static("idle baseline: spawner_9")
        yield Footer()

Idle().run()
"""

_BARE_SAMPLER = r"""
import sys, trio
from tractor_diag.sampler import Sampler

def tick(snap, events):
    if not tick.said:
        print(f"first sample: {len(snap.entries)} entries", flush=True)
        tick.said = True
tick.said = False
trio.run(Sampler([sys.argv[1]], interval=1.0).run, tick)
"""


def _descendants(pid: int) -> list[int]:
    from tractor_diag.procfs import scan
    from tractor_diag.trees import children_map, descendants

    return descendants(children_map(scan(detail_actors=False)), [pid])[1:]


class ActorTree:
    def __init__(self) -> None:
        self.root = subprocess.Popen(
            [sys.executable, "-c", _ROOT, str(SPAWNERS), str(LEAVES)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        if self.root.stdout.readline().strip() != b"ok":
            self.stop()
            raise RuntimeError("bench tree root did not start")
        want = 1 + SPAWNERS * (1 + LEAVES)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            titled = [p for p in self.pids() if self._titled(p)]
            if len(titled) == want - 1:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("bench tree did not come up")

    @staticmethod
    def _titled(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().startswith(b"_subactor[")
        except OSError:
            return False

    def pids(self) -> list[int]:
        return [self.root.pid, *_descendants(self.root.pid)]

    def stop(self) -> None:
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.root.wait(10)
        self.root.stdout.close()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def measure(argv: list[str], ready: str, *, quit_key: str | None = "q") -> dict:
    """Run ``argv``; first-output time of ``ready``, then CPU/RSS over the window."""
    import pexpect

    env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(SIZE[1]), LINES=str(SIZE[0]))
    started = time.monotonic()
    child = pexpect.spawn(argv[0], argv[1:], env=env, dimensions=SIZE, timeout=60,
                          encoding="utf-8", codec_errors="replace")
    pid = child.pid
    try:
        child.expect(ready)
        first = time.monotonic() - started
        stop = threading.Event()

        def drain() -> None:  # a terminal keeps reading: so do we
            while not stop.is_set():
                try:
                    child.read_nonblocking(65536, timeout=0.2)
                except pexpect.TIMEOUT:
                    continue
                except (pexpect.EOF, OSError, ValueError):
                    return

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        time.sleep(WARMUP)
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(WINDOW)
        cpu1, t1 = _cpu_seconds(pid), time.monotonic()
        rss = _status_kib(pid, "VmRSS") / 1024
        hwm = _status_kib(pid, "VmHWM") / 1024
        stop.set()
        reader.join(2)
    finally:
        if quit_key is not None and child.isalive():
            child.send(quit_key)
            try:
                child.expect(pexpect.EOF, timeout=15)
            except pexpect.TIMEOUT:
                pass
        if child.isalive():
            child.terminate(force=True)
    return {"first_ms": first * 1000, "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
            "rss_mb": rss, "hwm_mb": hwm}


def main() -> list[dict]:
    tree = ActorTree()
    try:
        n = len(tree.pids())
        print(f"[bench] dash: tree of {n} processes, window {WINDOW:g}s", file=sys.stderr)
        idle = measure([sys.executable, "-c", _IDLE_TEXTUAL], "spawner_9")
        bare = measure([sys.executable, "-c", _BARE_SAMPLER, str(tree.root.pid)],
                       "first sample", quit_key=None)
        dash = measure([sys.executable, "-m", "tractor_diag", "dash", "--interval", "1",
                        str(tree.root.pid)], "spawner_0")
    finally:
        tree.stop()
    rows = [
        {"case": f"dash first frame, {n} procs", "median_ms": dash["first_ms"],
         "baseline": "idle Textual app", "baseline_ms": idle["first_ms"],
         "ratio": dash["first_ms"] / idle["first_ms"], "target": "<= 1500 ms",
         "ok": dash["first_ms"] <= 1500, "value": dash["first_ms"], "unit": "ms"},
        {"case": f"dash CPU % of one core, {n} procs @1s", "median_ms": None,
         "value": dash["cpu_pct"], "unit": "% of one core",
         "baseline": "idle Textual app", "baseline_value": idle["cpu_pct"],
         "ratio": dash["cpu_pct"] / idle["cpu_pct"] if idle["cpu_pct"] else None,
         "bare_sampler_pct": bare["cpu_pct"],
         "target": "<= 5 %", "ok": dash["cpu_pct"] <= 5.0},
        {"case": "bare sampler CPU % (no UI)", "median_ms": None, "value": bare["cpu_pct"],
         "unit": "% of one core", "baseline": "dash", "baseline_value": dash["cpu_pct"],
         "ratio": bare["cpu_pct"] / dash["cpu_pct"] if dash["cpu_pct"] else None},
        {"case": f"dash RSS MB, {n} procs", "median_ms": None, "value": dash["rss_mb"],
         "peak": dash["hwm_mb"], "unit": "MB", "baseline": "idle Textual app",
         "baseline_value": idle["rss_mb"], "ratio": dash["rss_mb"] / idle["rss_mb"],
         "target": "<= 120 MB", "ok": dash["hwm_mb"] <= 120},
    ]
    print(f"[bench] dash: first frame {dash['first_ms']:.0f} ms (idle Textual "
          f"{idle['first_ms']:.0f} ms); CPU {dash['cpu_pct']:.2f}% of one core "
          f"(idle Textual {idle['cpu_pct']:.2f}%, bare sampler {bare['cpu_pct']:.2f}%); "
          f"RSS {dash['rss_mb']:.1f} MB, peak {dash['hwm_mb']:.1f} MB "
          f"(idle Textual {idle['rss_mb']:.1f} MB)", file=sys.stderr)
    return rows


if __name__ == "__main__":
    for row in main():
        print(row)
