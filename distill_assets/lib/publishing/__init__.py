"""Publishing a run's datasets: the versions, the manifest, the trace lookup and ``distill
diff``."""
