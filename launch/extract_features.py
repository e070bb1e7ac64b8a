"""Features of a trained encoder for your own videos: one .npy per video, plus an index.

Usage: python launch/extract_features.py --help. The code is everest/cli/extract_features.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.extract_features import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
