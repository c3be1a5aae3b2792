"""Structural edits: dropping blocks (or single residual branches), removing channels through
Torch-Pruning, and the replayable log that rebuilds a compressed model from its base."""
