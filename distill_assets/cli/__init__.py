"""The ``distill`` command: run the graph, import foreign logs, read receipts and drift reports.

``main`` (the console script's target, ``distill_assets.cli:main``) parses the arguments and
dispatches (``main.py``); the verbs live by what they do: ``materialize.py`` (materialize, ui and
the plumbing that starts Dagster), ``inspect.py`` (read-only verbs over an output: receipts,
drift, search, trace, diff, and the run summary), ``importing.py`` (verbs that write evidence:
import, review import, synth), ``common.py`` (what they share). Importing the package stays
light: the stages' libraries load inside the verbs that use them.
"""

from distill_assets.cli.main import main

__all__ = ["main"]
