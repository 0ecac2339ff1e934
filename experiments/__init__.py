"""Hydra entry points that compose the rmt library into paper experiments."""
