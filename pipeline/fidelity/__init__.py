"""Supernet fidelity: inherited against stand-alone accuracy over architectures spread across a space, trained
as parallel, resumable Ray Tune trials, summarised by rank correlations with bootstrap intervals."""
