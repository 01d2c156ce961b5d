"""The research side: run records, leaderboard, sweeps, plots and the static HTML report.

Nothing on the training path imports this package (``tests/test_layering.py``); its heavy
dependencies (matplotlib, scipy, sqlalchemy) are imported inside the functions that use them.
"""
