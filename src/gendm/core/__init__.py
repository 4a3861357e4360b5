"""Seeding, devices, registries, errors, atomic I/O, configs and the checkpoint format."""
