"""GAS back-office utilities."""

__version__ = "0.22.0"
