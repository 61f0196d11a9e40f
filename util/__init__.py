"""GAS back-office utilities."""
