"""DICOMweb benchmark entry point: ``python benchmarks/dicomweb.py`` ≡ ``aifi bench dicomweb``.

See :mod:`aifi.bench.dicomweb` for what is measured and how; run ``--help`` for the options.
"""

from aifi.cli import app

if __name__ == "__main__":
    app(["bench", "dicomweb", *__import__("sys").argv[1:]])
