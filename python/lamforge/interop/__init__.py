"""Interoperability with other atomistic ML codes (deepmd-kit checkpoints: ``interop.deepmd``)."""
