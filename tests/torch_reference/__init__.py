"""Test-only PyTorch re-creations of the original networks, for numerical comparisons."""
