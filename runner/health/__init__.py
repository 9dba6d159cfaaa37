"""Collapse statistics (stats.py) and the rules that read them (detectors.py)."""
