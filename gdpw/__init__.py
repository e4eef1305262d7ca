"""gdpw: geometry-driven progressive warping for one-shot face animation."""

__version__ = "0.1.0"
