"""Figures from run records: loaders (local run store, W&B) and one module per paper figure."""
