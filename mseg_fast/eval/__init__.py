"""Metrics and validation."""
