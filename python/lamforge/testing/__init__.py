"""Reusable test helpers: oracles (neighbour lists), reference implementations and physics checks."""
