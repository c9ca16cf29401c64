"""What does the xontrib add to xonsh's start-up?

xonsh loads entry-point xontribs at every start (``xonsh -c`` too), so the
load must be cheap. Timed as whole processes, interleaved round by round so
drift hits all equally:

- baseline: ``xonsh --no-rc -c pass``;
- ``xonsh --no-rc -c 'xontrib load tractor_diag'``: ours;
- ``xonsh --no-rc -c 'xontrib load <empty>'``: an empty xontrib module, to
  tell xonsh's own ``xontrib load`` machinery (entry-point lookup) from
  what our module costs;
- ``xonsh -c pass`` with rc files disabled but entry-point auto-load on:
  what a user's every ``xonsh -c`` pays, ours included.

Target: ours - baseline <= 30 ms.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REPEAT = int(os.environ.get("BENCH_XONTRIB_REPEAT", "21"))
TARGET_MS = 30.0


def _xonsh() -> str:
    exe = Path(sys.executable).parent / "xonsh"
    if not exe.exists():
        raise RuntimeError(f"no xonsh next to {sys.executable}: install the test extras")
    return str(exe)


def _time(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    res = subprocess.run(args, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = (time.perf_counter() - started) * 1000
    if res.returncode != 0 or res.stderr:
        raise RuntimeError(f"{args!r} failed ({res.returncode}): {res.stderr.decode()[-500:]}")
    return took


def main() -> list[dict]:
    xonsh = _xonsh()
    with tempfile.TemporaryDirectory() as tmp:
        # A second location of the `xontrib` namespace package, holding an
        # empty xontrib.
        (Path(tmp) / "xontrib").mkdir()
        (Path(tmp) / "xontrib" / "bench_empty_probe.py").write_text('"""empty"""\n')
        env = dict(os.environ)
        # Measure what users get: bytecode cached after the warm-up run (a
        # session with PYTHONDONTWRITEBYTECODE would recompile every time).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), tmp, env.get("PYTHONPATH")]))
        auto_env = dict(env, XONSHRC="/dev/null", XONSHRC_DIR=str(Path(tmp) / "none"))
        cases = {
            "bare": ([xonsh, "--no-rc", "-c", "pass"], env),
            "ours": ([xonsh, "--no-rc", "-c", "xontrib load tractor_diag"], env),
            "empty": ([xonsh, "--no-rc", "-c", "xontrib load bench_empty_probe"], env),
            "autoload": ([xonsh, "-c", "pass"], auto_env),
        }
        for args, case_env in cases.values():  # warm the bytecode caches
            _time(args, case_env)
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(REPEAT):
            for key, (args, case_env) in cases.items():
                times[key].append(_time(args, case_env))
    med = {k: statistics.median(v) for k, v in times.items()}
    added = med["ours"] - med["bare"]
    return [
        {"case": "xonsh --no-rc -c pass", "median_ms": med["bare"], "n": REPEAT},
        {"case": "+ xontrib load tractor_diag", "median_ms": med["ours"],
         "baseline": "xonsh --no-rc -c pass", "baseline_ms": med["bare"],
         "ratio": med["ours"] / med["bare"], "n": REPEAT},
        {"case": "added by loading tractor_diag", "median_ms": added,
         "target": f"<= {TARGET_MS:g} ms", "ok": added <= TARGET_MS, "n": REPEAT},
        {"case": "+ xontrib load <empty module>", "median_ms": med["empty"],
         "baseline": "xonsh --no-rc -c pass", "baseline_ms": med["bare"],
         "ratio": med["empty"] / med["bare"], "n": REPEAT},
        {"case": "ours beyond an empty xontrib", "median_ms": med["ours"] - med["empty"],
         "baseline": "empty xontrib", "baseline_ms": med["empty"],
         "ratio": med["ours"] / med["empty"], "n": REPEAT},
        {"case": "xonsh -c pass (entry points auto-loaded)", "median_ms": med["autoload"],
         "baseline": "xonsh --no-rc -c pass", "baseline_ms": med["bare"],
         "ratio": med["autoload"] / med["bare"], "n": REPEAT},
    ]


if __name__ == "__main__":
    for row in main():
        print(row)
