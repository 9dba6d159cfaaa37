"""Health monitor: statistics (stats.py), the rule framework (findings.py), the rules (rules.py), their
advice (advice.py), replay of logged rows (replay.py), the text table (table.py), the callback (monitor.py).

`runner.health.Monitor` (loop.py) runs them in a training loop the user wrote.
"""


def __getattr__(name):  # lazy: importing runner.health.<module> does not import the loop API
    if name == "Monitor":
        from runner.health.loop import Monitor

        return Monitor
    raise AttributeError(name)
