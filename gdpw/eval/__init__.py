"""Evaluation: reconstruction metrics, the paper's protocol and reports."""
