"""Re-ranking a search's shortlist by short fine-tunes from inherited weights (a phase built on training)."""
