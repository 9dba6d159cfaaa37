"""runner: a PyTorch experiment runner wired to W&B that notices model collapse."""

__version__ = "0.1.0"
