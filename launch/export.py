"""Consolidate a DeepSpeed checkpoint (any ZeRO stage, any number of ranks) into one fp32 file.

Usage: python launch/export.py --help. The code is everest/cli/export.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
