"""Command-line interface: ``lamforge <command>``."""
