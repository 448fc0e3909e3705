"""``python -m lt_lightning.study -c STUDY.yaml``: the same as ``lt-lightning study -c STUDY.yaml``."""

import sys

from lt_lightning.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
