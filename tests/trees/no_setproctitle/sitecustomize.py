"""Makes ``import setproctitle`` fail (tractor treats it as optional): a
tree started with this dir on PYTHONPATH runs without process titles."""
import sys

sys.modules['setproctitle'] = None
