"""The training datasets: the export pass, the exports (RAG, SFT, preference, KTO), their row
formats and dataset cards."""
