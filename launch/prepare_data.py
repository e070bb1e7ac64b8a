"""Prepare a video collection into litdata shards for EVEREST.

    python launch/prepare_data.py --videos DIR --annotations FILE.csv --output OUT \
        [--short-side 256] [--workers N] [--overwrite]

Annotation lines are `path/to/video [label ...]` (comma or space separated; integer class
indices, float regression targets, or no label for pretraining). See everest/data/prepare.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from everest.engine.interrupts import exit_on_signal  # noqa: E402  (first: Ctrl-C is clean from here on)

exit_on_signal()

from everest.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
