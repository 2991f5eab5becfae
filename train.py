"""`python train.py ...` and `torchrun ... train.py ...` from a checkout. The command itself is tools/train.py
(`mseg-train` once installed); `python train.py --help` says how to use it."""

import sys

from tools.train import main

if __name__ == "__main__":
    sys.exit(main())
