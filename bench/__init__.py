"""Benchmarks, run by ``./dev bench`` (``python -m bench [NAME ...]``).

Each ``bench/<name>.py`` has a ``main()`` that measures against a baseline
timed *in the same run* (a ratio survives a slower machine; an absolute
figure does not) and returns a list of rows, plain dicts:

    case         what was timed, e.g. "snapshot, 100 procs"
    median_ms    median over the repeats
    baseline     what it is compared with (optional)
    baseline_ms  the baseline's median in the same run (optional)
    ratio        median_ms / baseline_ms (optional)
    target       the goal as text, e.g. "<= 1.5x" or "<= 150 ms" (optional)
    ok           whether the target was met (optional)
    n            how many repeats (optional)

The runner prints them as one table and writes them to
``bench/results/<name>.json`` (gitignored). Benchmarks are never tests:
nothing here asserts on a time.
"""
