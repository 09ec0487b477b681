"""Reconstruction engine (being written)."""
