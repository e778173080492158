"""Lightning callbacks of train and evaluate runs: threshold fitting, test outputs, progress display."""
