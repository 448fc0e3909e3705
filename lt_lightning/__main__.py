"""``python -m lt_lightning`` — the same CLI as the ``lt-lightning`` console script."""

from lt_lightning.cli import main

if __name__ == "__main__":
    main()
