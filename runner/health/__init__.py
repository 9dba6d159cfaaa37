"""Health monitor: statistics (stats.py), the rule framework (findings.py), the rules (rules.py), their
advice (advice.py), replay of logged rows (replay.py), the text table (table.py), the callback (monitor.py)."""
