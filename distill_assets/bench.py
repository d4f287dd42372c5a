"""Entry point kept for ``python -m distill_assets.bench``: the benchmark lives in
:mod:`distill_assets.devtools.bench`."""

from distill_assets.devtools.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
