"""Shipped YAML presets (top-level presets/ folder, packaged as litevae_cli.presets)."""
