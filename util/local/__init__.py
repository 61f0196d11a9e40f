"""A local AWS for the demo and the tests: moto plus what moto lacks."""
