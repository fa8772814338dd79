"""Gateway benchmark entry point: ``python benchmarks/gateway.py`` ≡ ``aifi bench gateway``.

See :mod:`aifi.bench.gateway` for what is measured and how; ``--help`` for options.
"""

from aifi.cli import app

if __name__ == "__main__":
    app(["bench", "gateway", *__import__("sys").argv[1:]])
