"""Models, plain torch: backbone, view graphs, coupling blocks, cross-view fusion, the flow, anomaly maps and
MultiFlowModel (the one model behind training, testing, prediction and export), checkpoints, threshold."""
