"""UDFC: unified data-free pruning and low-bit quantization with closed-form compensation (Bai et al., ICCV 2023).

``config`` holds the options, ``strategy`` the registered ``"udfc"`` strategy, ``closed_form`` the maths,
``chains`` finds where it applies, ``compensate`` edits layers and ``pipeline`` runs the whole pass; real
low-bit OpenVINO weights are written by :mod:`practise_plugin.export.lowbit`. Kept empty so that reading
the options stays cheap."""
