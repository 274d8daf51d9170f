"""``python -m hw.explore``: see :mod:`hw.explore.cli`."""

from hw.spec.cli import exit_on_signals_while_starting

exit_on_signals_while_starting("python -m hw.explore")

import sys  # noqa: E402 - after the signal handlers, so an early Ctrl-C still ends cleanly

from hw.explore.cli import main  # noqa: E402

sys.exit(main())
