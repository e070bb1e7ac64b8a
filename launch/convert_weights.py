"""Convert checkpoints between our format, official VideoMAE/EVEREST .pth and Hugging Face.

Usage: python launch/convert_weights.py --help. The code is everest/cli/convert_weights.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.convert_weights import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
