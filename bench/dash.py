"""What does the dashboard cost, against what a user would compare it to?

A real tree of 200 processes is built on this box: a python root, 10
"spawners" with 19 leaves each, every one titled like a current-runtime
actor (``_subactor[<name>@<pid>]``: a ``cat`` started with ``exec -a``,
blocked reading a pipe, about 1 MB each, so the tree costs the box little).
The box's other processes stay: the dashboard shows the strays among them,
as it does for a user.

Four programs then run side by side, each in its own pty (160x50, with a
reader draining it as a terminal would), and are measured from outside over
the same windows of ``BENCH_DASH_SECONDS`` (default 60), ``BENCH_DASH_REPEATS``
times (default 2), after a warm-up:

- ``tractor-diag dash ROOT``, default settings (1 s interval, strays on):
  the whole process, as a user runs it;
- ``htop -d 10`` (1 s refresh; installed with apt-get when missing and we
  may, else skipped with a line saying so);
- the bare sampler (`Sampler.run` on the same root, no UI);
- the floor: a bare Textual app that updates one label every second, what
  any Textual dashboard costs at least.

CPU is ``utime + stime`` of each whole process (every thread) from
``/proc/<pid>/stat`` over the window, as % of one core; RSS is VmRSS at the
end of the window (VmHWM is the peak). The first frame is timed from
spawning ``dash`` until its output shows the tree. The load average and the
box's process count are reported with every window: on a shared box the
absolute figures move with the load, the ratios much less.

Targets (issue 12): dashboard <= 0.3x htop's CPU, or <= 2x the Textual floor
where htop itself costs little; RSS <= 80 MB; bare sampler <= 1.5 % of a
core; first frame <= 1.5 s.
"""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

WINDOW = float(os.environ.get("BENCH_DASH_SECONDS", "60"))
REPEATS = int(os.environ.get("BENCH_DASH_REPEATS", "2"))
WARMUP = 5.0
SIZE = (50, 160)  # rows, columns

_FLOOR_TEXTUAL = r"""
import time
from textual.app import App
from textual.widgets import Label

class Floor(App):
    BINDINGS = [("q", "quit", "Quit")]
    def compose(self):
        yield Label("floor", id="clock")
    def on_mount(self):
        self.set_interval(1.0, self.tick)
    def tick(self):
        self.query_one("#clock", Label).update(f"floor {time.time():.0f}")

Floor().run()
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


SPAWNERS = 10
LEAVES = 19  # per spawner: 1 + 10 + 190 = 201 processes with the root

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


def _box() -> tuple[float, int]:
    """(1-minute load average, processes on the box)."""
    return os.getloadavg()[0], sum(1 for n in os.listdir("/proc") if n.isdigit())


def _htop() -> str | None:
    """htop's path; installed with apt-get when missing and we are root."""
    found = shutil.which("htop")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("[bench] dash: htop missing, installing it with apt-get", file=sys.stderr)
    for argv in (["apt-get", "install", "-y", "htop"], ["apt-get", "update"],
                 ["apt-get", "install", "-y", "htop"]):
        try:
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if shutil.which("htop"):
            break
    return shutil.which("htop")


class Program:
    """One program in its own pty, drained as a terminal would."""

    def __init__(self, name: str, argv: list[str], ready: str, quit_key: str | None = "q"):
        import pexpect

        self.name, self.quit_key = name, quit_key
        env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(SIZE[1]),
                   LINES=str(SIZE[0]))
        # bytecode cached, as in a user's install (a test environment may
        # set this: each start would compile the package again)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        started = time.monotonic()
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, dimensions=SIZE, timeout=60,
                                   encoding="utf-8", codec_errors="replace")
        self.pid = self.child.pid
        self.child.expect(ready)
        self.first = time.monotonic() - started
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        import pexpect

        while not self._stop.is_set():
            try:
                self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError, ValueError):
                return

    def cpu(self) -> float:
        return _cpu_seconds(self.pid)

    def rss(self) -> tuple[float, float]:
        return _status_kib(self.pid, "VmRSS") / 1024, _status_kib(self.pid, "VmHWM") / 1024

    def stop(self) -> None:
        import pexpect

        self._stop.set()
        self._reader.join(2)
        if self.quit_key is not None and self.child.isalive():
            self.child.send(self.quit_key)
            try:
                self.child.expect(pexpect.EOF, timeout=15)
            except (pexpect.TIMEOUT, OSError):
                pass
        if self.child.isalive():
            self.child.terminate(force=True)


def _windows(programs: dict[str, Program]) -> list[dict]:
    out = []
    for i in range(REPEATS):
        load0, nprocs = _box()
        cpu0 = {k: p.cpu() for k, p in programs.items()}
        t0 = time.monotonic()
        time.sleep(WINDOW)
        cpu1 = {k: p.cpu() for k, p in programs.items()}
        t1 = time.monotonic()
        load1, _ = _box()
        w = {"load": (load0 + load1) / 2, "procs": nprocs}
        for k, p in programs.items():
            w[k] = (cpu1[k] - cpu0[k]) / (t1 - t0) * 100
            w[k + "_rss"], w[k + "_hwm"] = p.rss()
        line = ", ".join(f"{k} {w[k]:.2f}%" for k in programs)
        print(f"[bench] dash: window {i + 1}/{REPEATS} ({WINDOW:g}s, load {w['load']:.1f}, "
              f"{nprocs} processes on the box): {line}; dash RSS {w['dash_rss']:.1f} MB",
              file=sys.stderr)
        out.append(w)
    return out


def main() -> list[dict]:
    dash_cmd = shutil.which("tractor-diag", path=os.path.dirname(sys.executable))
    dash_argv = [dash_cmd] if dash_cmd else [sys.executable, "-m", "tractor_diag"]
    htop = _htop()
    # compile what the dashboard imports once, so its first frame is timed
    # from cached bytecode, as a user's install has it
    subprocess.run([sys.executable, "-c", "import tractor_diag.tui.app, tractor_diag.sampler"],
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                   check=False)
    tree = ActorTree()
    programs: dict[str, Program] = {}
    try:
        n = len(tree.pids())
        print(f"[bench] dash: tree of {n} processes, {REPEATS} window(s) of {WINDOW:g}s",
              file=sys.stderr)
        if htop is None:
            print("[bench] dash: htop is not installed (apt-get install htop): "
                  "its column is skipped", file=sys.stderr)
        else:
            programs["htop"] = Program("htop", [htop, "-d", "10"], r"Load average|Tasks")
        programs["floor"] = Program("floor", [sys.executable, "-c", _FLOOR_TEXTUAL], "floor")
        programs["sampler"] = Program("sampler", [sys.executable, "-c", _BARE_SAMPLER,
                                                  str(tree.root.pid)], "first sample",
                                      quit_key=None)
        # the dashboard last, alone while it starts: its first frame
        programs["dash"] = Program("dash", [*dash_argv, "dash", str(tree.root.pid)],
                                   "spawner_0")
        time.sleep(WARMUP)
        windows = _windows(programs)
    finally:
        for p in programs.values():
            p.stop()
        tree.stop()

    def med(key: str) -> float:
        return statistics.median(w[key] for w in windows)

    dash, floor, sampler = med("dash"), med("floor"), med("sampler")
    htop_cpu = med("htop") if "htop" in programs else None
    load = med("load")
    first = programs["dash"].first * 1000
    rss, hwm = med("dash_rss"), max(w["dash_hwm"] for w in windows)
    vs_htop = dash / htop_cpu if htop_cpu else None
    vs_floor = dash / floor if floor else None
    cpu_ok = (vs_htop is not None and vs_htop <= 0.3) or (vs_floor is not None and vs_floor <= 2)
    rows = [
        {"case": f"dash CPU % of one core, {n} procs, defaults", "median_ms": None,
         "value": dash, "unit": "% of one core", "baseline": "htop -d 10",
         "baseline_value": htop_cpu, "ratio": vs_htop, "floor_value": floor,
         "floor_ratio": vs_floor, "load": load, "windows": windows,
         "target": "<= 0.3x htop or <= 2x floor", "ok": cpu_ok},
        {"case": "dash CPU vs bare Textual floor", "median_ms": None, "value": dash,
         "unit": "% of one core", "baseline": "Textual, 1 label/s", "baseline_value": floor,
         "ratio": vs_floor, "target": "<= 2x (small box)", "ok": vs_floor is not None and vs_floor <= 2},
        {"case": "bare sampler CPU % (no UI)", "median_ms": None, "value": sampler,
         "unit": "% of one core", "baseline": "dash", "baseline_value": dash,
         "ratio": sampler / dash if dash else None, "target": "<= 1.5 %", "ok": sampler <= 1.5},
        {"case": f"dash RSS MB, {n} procs", "median_ms": None, "value": rss, "peak": hwm,
         "unit": "MB", "baseline": "Textual floor", "baseline_value": med("floor_rss"),
         "ratio": rss / med("floor_rss"), "target": "<= 80 MB", "ok": rss <= 80},
        {"case": f"dash first frame, {n} procs", "median_ms": first,
         "baseline": "Textual floor", "baseline_ms": programs["floor"].first * 1000,
         "ratio": first / (programs["floor"].first * 1000), "target": "<= 1500 ms",
         "ok": first <= 1500, "value": first, "unit": "ms"},
    ]
    htop_txt = f"{htop_cpu:.2f}% ({vs_htop:.2f}x)" if htop_cpu else "skipped"
    print(f"[bench] dash (median of {len(windows)}, load {load:.1f}): CPU {dash:.2f}% of one "
          f"core; htop {htop_txt}; Textual floor {floor:.2f}% ({vs_floor:.2f}x); "
          f"bare sampler {sampler:.2f}%; RSS {rss:.1f} MB (peak {hwm:.1f}); "
          f"first frame {first:.0f} ms", file=sys.stderr)
    return rows


if __name__ == "__main__":
    for row in main():
        print(row)
