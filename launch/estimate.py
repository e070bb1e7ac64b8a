"""Memory and FLOPs of a pretraining run before launching it.

Usage: python launch/estimate.py --help. The code is everest/cli/estimate.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.estimate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
