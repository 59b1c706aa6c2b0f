"""The pure-Python core: search spaces, architectures, sampling, exact counts, tasks, Pareto ranking.

No torch and no Ray here, so counting, validating and the search strategy run anywhere (a test checks this).
"""
