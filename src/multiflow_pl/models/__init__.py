"""The method, plain torch: backbone, view graphs, channel permutations, coupling blocks, cross-view messages,
the flow, anomaly maps, and MultiFlowModel (the one model behind training, testing, prediction and export);
its export, checkpoints and threshold. How fast the subnets compute lives in :mod:`multiflow_pl.speed`."""
