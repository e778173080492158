"""Evaluation: streaming metrics (torchmetrics), result writers (metrics.json, score tables, Real-IAD
prediction pickles) and figures."""
