"""Hydra config tree (a package so `initialize_config_module("sar.conf")` and `pkg://sar.conf` work)."""
