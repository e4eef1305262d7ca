"""Pieces every stage shares: typed errors, the config machinery, crop geometry, image and file helpers."""
