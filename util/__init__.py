"""GAS back-office utilities."""

__version__ = "0.22.0"  # what every command's --version says (util/cli.py); pyproject.toml agrees
