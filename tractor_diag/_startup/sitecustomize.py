"""tractor-diag's start-up hook (put on PYTHONPATH by taskdump.startup_env).

Python imports the first ``sitecustomize`` on ``sys.path`` at start-up. This
one arms tractor_diag's SIGUSR1 task dumper when TRACTOR_DIAG_TASKDUMP is
set (and does nothing else otherwise), then runs the ``sitecustomize`` it
shadows, so a venv's own start-up code still runs. The dumper module is
loaded from this file's package by path, under a private name: the target
may run in a venv where tractor_diag is not installed (it is stdlib-only).
"""


def _tractor_diag_startup():
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    if os.environ.get("TRACTOR_DIAG_TASKDUMP", "") not in ("", "0"):
        try:
            name = "_tractor_diag_startup_taskdump"
            module = sys.modules.get(name)
            if module is None:
                path = os.path.join(os.path.dirname(here), "taskdump.py")
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            module.arm_from_env()
        except Exception as exc:  # never stop the program from starting
            try:
                os.write(2, f"tractor-diag: task dumper not armed at start-up: {exc!r}\n".encode())
            except OSError:
                pass

    # Chain to the sitecustomize this file shadows.
    rest = [p for p in sys.path
            if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_tractor_diag_startup()
del _tractor_diag_startup
