"""Reusable test helpers: reference neighbour lists and physics checks for energy models."""
