"""Dagster glue outside ``defs/``: what the thin asset, check and sensor modules share.

``resource.py`` is the resource (where evidence is read and datasets written) and the one reader
of the environment at run time (paths, thresholds, the pins records are stamped with);
``settings.py`` the one reader of the settings fixed when the definitions load (executor,
backfill mode, partition bounds); ``partitions.py`` the daily partitions and backfill policies;
``config.py`` the run config of each stage, whose defaults come from lib's settings dataclasses;
``stage.py`` the runner every asset uses (prepare, execute, record, report); ``checks.py`` the
check steps' bodies. Import a name from the module that owns it: this package re-exports
nothing. The layering is one-way: ``cli`` -> ``runtime``/``defs`` -> ``lib``, and ``lib`` never
imports Dagster or this package.
"""
