"""Evidence in: the evidence format v1, the collect stage, the sources an output was built from,
and the importers of foreign formats."""
