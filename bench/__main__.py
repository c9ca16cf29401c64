"""``python -m bench [NAME ...]``: run ``bench/<name>.py:main()`` for every
benchmark module (or only those named), print one table, save JSON."""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def _fmt_ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def table(rows: list[dict]) -> str:
    head = ["bench", "case", "median ms", "baseline", "baseline ms", "ratio", "target", "ok"]
    body = []
    for r in rows:
        ok = r.get("ok")
        body.append([
            r["bench"], r["case"], _fmt_ms(r.get("median_ms")), r.get("baseline") or "-",
            _fmt_ms(r.get("baseline_ms")),
            f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-",
            r.get("target") or "-",
            "-" if ok is None else ("yes" if ok else "NO"),
        ])
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def meta() -> dict:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str]) -> int:
    known = discover()
    names = argv or known
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"bench: no such benchmark: {', '.join(unknown)} (have: {', '.join(known)})", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    all_rows: list[dict] = []
    failed = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        info = meta()
        try:
            rows = importlib.import_module(f"bench.{name}").main() or []
        except Exception:  # one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
            continue
        rows = [{"bench": name, **r} for r in rows]
        all_rows += rows
        info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (RESULTS / f"{name}.json").write_text(json.dumps({"meta": info, "rows": rows}, indent=2) + "\n")
    if all_rows:
        print(table(all_rows))
        print(f"\nresults: {RESULTS}/<name>.json")
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
