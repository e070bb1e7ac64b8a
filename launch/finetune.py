"""Fine-tune a pretrained EVEREST/VideoMAE encoder for classification or regression.

Usage: python launch/finetune.py --help. The code is everest/cli/finetune.py.
"""

import sys

from everest.engine.interrupts import exit_on_signal

exit_on_signal()  # first: Ctrl-C is clean from here on

from everest.cli.finetune import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
