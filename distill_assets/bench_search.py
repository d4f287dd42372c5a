"""Entry point kept for ``python -m distill_assets.bench_search``: the search benchmark lives in
:mod:`distill_assets.devtools.bench_search`."""

from distill_assets.devtools.bench_search import main

if __name__ == "__main__":
    raise SystemExit(main())
