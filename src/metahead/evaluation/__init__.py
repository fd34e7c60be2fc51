"""Evaluation metrics and the paper's protocol."""
