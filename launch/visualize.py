"""Reconstruction pictures: what the model keeps, sees and rebuilds, clip by clip.

Usage: python launch/visualize.py --help. The code is everest/cli/visualize.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.visualize import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
