"""The ``rawsse`` command line: ``serve``, ``bench`` and ``trace`` (and the workers and demo app).

``main`` is the console script's entry point; everything else here is private.
"""

from rawsse.cli._main import main

__all__ = ["main"]
