"""The health monitor inside other training frameworks: lightning.py (PyTorch Lightning).

Install with `pip install 'runner[integrations]'`."""
