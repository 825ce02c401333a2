"""Typed configuration: nested keyword-only dataclasses read from and written to YAML."""

from lamforge.config.io import ConfigError, from_dict, load_yaml, save_yaml, to_dict

__all__ = ["ConfigError", "from_dict", "load_yaml", "save_yaml", "to_dict"]
