"""Restore utility: starts Glacier retrievals of a user's archived results after an upgrade."""
