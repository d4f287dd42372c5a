"""Independent verification of what was written: the Pandera models, the contamination firewall and
the checks' bodies."""
