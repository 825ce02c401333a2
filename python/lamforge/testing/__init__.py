"""Reusable test helpers: oracles, reference neighbour lists and physics checks."""
