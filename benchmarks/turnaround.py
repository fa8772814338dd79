"""AIR turnaround benchmark entry point: ``python benchmarks/turnaround.py`` ≡
``aifi bench turnaround``.

See :mod:`aifi.bench.turnaround` for what is measured and how; ``--help`` for options.
"""

from aifi.cli import app

if __name__ == "__main__":
    app(["bench", "turnaround", *__import__("sys").argv[1:]])
