"""GAS back-office utilities."""

__version__ = "1.0.0"  # what every command's --version says (util/cli.py)
