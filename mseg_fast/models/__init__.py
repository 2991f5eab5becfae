"""Segmentation networks and their checkpoints (never imports data code)."""
