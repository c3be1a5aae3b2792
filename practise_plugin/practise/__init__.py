"""PRACTISE block dropping (Wang & Wu, CVPR 2023 / TPAMI 2024), one module per step: ``adaptors`` (where
linear adaptors go around a hole, and their folding), ``recoverability`` (R(B): how well they recover it),
``selection`` (which blocks meet the latency target), ``recovery`` (feature mimicking and its baselines),
``pipeline`` (the steps in order), ``config`` and ``strategy`` (the registered ``"practise"`` strategy).
Kept empty so that reading the options stays cheap."""
