"""What a run leaves as its account: stage results and tallies, receipts, the per-run reports and
summary, drift, alerts."""
