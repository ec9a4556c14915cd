"""Test support: workflows the real worker subprocesses import, and process helpers."""
