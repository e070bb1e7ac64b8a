"""`python -m everest.bench.transfer` runs the transfer experiment, `everest.experiments.transfer`
(an experiment runner, not a timing benchmark); kept so that the known command still works."""

import sys

from everest.experiments.transfer import main

if __name__ == "__main__":
    sys.exit(main())
