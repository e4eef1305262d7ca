"""Command-line interface: ``gdpw <command> ...``."""
