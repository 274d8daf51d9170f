"""Lowering layers to engine programs."""
