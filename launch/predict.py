"""Run a fine-tuned model on video files: per-video class and top-5 with probabilities
(classification) or values (regression), multi-view averaged as launch/evaluate.py does.

Usage: python launch/predict.py --help. The code is everest/cli/predict.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.predict import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
