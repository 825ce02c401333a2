"""Reusable checks and reference implementations for tests (oracles, physics invariants)."""
