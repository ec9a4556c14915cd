"""Operator commands: `python -m ops <command>` (also installed as `kodo`)."""
