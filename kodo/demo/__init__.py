"""Proof workflows used by the durability runbooks (crash demo)."""
