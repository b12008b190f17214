"""Integrations that load the bundle in other applications: MONAI Deploy and MONAI Label."""
