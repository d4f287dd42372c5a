"""Tools for developers, not the product: the seeded synthetic corpus (``distill synth``) and the
benchmarks (``python -m distill_assets.bench``, ``python -m distill_assets.bench_search``).

Nothing in the asset graph imports from here; tests and the benchmarks do.
"""
