"""``python -m aifi`` is the ``aifi`` command."""

from aifi.cli import app

app()
