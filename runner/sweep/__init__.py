"""W&B sweep files, validated and run offline (`python -m runner.sweep FILE`).

    distributions  what a W&B distribution means (keys, inference, range, grid, one draw)
    agent          what `wandb agent` runs: the argv (${args}) and the sweep-parameter file
    validate       load_sweep: the file checked against the runner before any run starts
    probe          the names the runner logs for a config (one CPU step of the real Trainer)
    swept          runner.train's run-time check that every swept value reached the config
    search         grid / random / bayes searches and hyperband's stop verdicts
    trials         SweepRunner: trials as subprocesses, their metrics, the leaderboard
    __main__       the command line
"""
