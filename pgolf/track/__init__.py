"""The research side: a run registry, views over it, sweeps and the agent loop (DESIGN "research side").

    pgolf runs list|show|compare|import     the registry (SQLite by default, any SQLAlchemy URL)
    pgolf leaderboard                        runs grouped by config hash across seeds, Welch p-values
    pgolf sweep SPEC.yaml                    Optuna search / greedy selection / ablation matrix
    pgolf task | try | feed                  the loop an external agent (or a person) follows
    pgolf report --out DIR                   static HTML: leaderboard, plots, run details

Nothing on the training path imports this package; ``pgolf.cli`` records each finished
``run``/``train``/``eval``/``export`` here (``PGOLF_REGISTRY=off`` switches that off).
"""
