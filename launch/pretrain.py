"""EVEREST pretraining.

Usage: python launch/pretrain.py --help. The code is everest/cli/pretrain.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.pretrain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
