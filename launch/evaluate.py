"""Multi-view test of a fine-tuned model: per-video predictions (CSV) and metrics (JSON).

Usage: python launch/evaluate.py --help. The code is everest/cli/evaluate.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
