"""Reading a model's structure: shallow fx graphs of each module's forward, one hooked forward pass, the drop
candidates (identity-shortcut residual blocks and branches), the pre-pooling feature point, MACs."""
