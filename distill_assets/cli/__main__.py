"""``python -m distill_assets.cli``: the ``distill`` command, as the console script runs it."""

from distill_assets.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
