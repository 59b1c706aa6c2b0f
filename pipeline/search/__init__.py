"""Phase 2 of AutoFormer: evolutionary search over a trained supernet.

Pure-Python parts (constraints, Pareto ranking, the evolution/random strategies) import neither torch nor
Ray; the evaluator actors, the Tune searcher and the driver sit on top of them.
"""
