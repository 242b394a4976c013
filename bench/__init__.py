"""Measuring edge-pose: benchmark scripts (see README.md here)."""
