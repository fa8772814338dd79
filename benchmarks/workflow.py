"""AIW-I workflow benchmark entry point: ``python benchmarks/workflow.py`` ≡
``aifi bench workflow``.

See :mod:`aifi.bench.workflow` for what is measured and how; ``--help`` for options.
"""

from aifi.cli import app

if __name__ == "__main__":
    app(["bench", "workflow", *__import__("sys").argv[1:]])
