"""Design-space exploration of the generator: ``python -m hw.explore`` (see :mod:`hw.explore.cli`).

- :mod:`.cli`: the command line, the points of a sweep and their keys;
- :mod:`.sweep`: the loop (resume, progress, saving each point as it finishes);
- :mod:`.engines`: where points run (a local process pool, or a Dask cluster);
- :mod:`.points`: one point (build, area, compile and emulate through ``python -m sw.evaluate``, caches);
- :mod:`.results` and :mod:`.summary`: the table (CSV, JSON), the Markdown summary and the plots.
"""

from .cli import main

__all__ = ["main"]
