"""Models: backbone, view graphs, coupling blocks, cross-view fusion, the flow and its Lightning wrapper."""
