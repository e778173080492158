"""Data: indexes of multi-view samples, datasets, the data module and the feature cache."""
