"""Evaluation: streaming metrics, scores, exports and plots."""
