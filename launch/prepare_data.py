"""Prepare a video collection into litdata shards for EVEREST.

Usage: python launch/prepare_data.py --help. The code is everest/cli/prepare_data.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.prepare_data import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
