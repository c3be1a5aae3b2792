"""UDFC: unified data-free pruning and low-bit quantization with closed-form compensation.

``closed_form`` holds the maths, ``chains`` finds where it applies, ``compensate`` edits layers,
``pipeline`` runs the whole pass, ``openvino`` exports with real low-bit weights. The registered
strategy (``practise_plugin.strategies.udfc``) is the user-facing entry point.
"""

from .compensate import compensate_next_layer

__all__ = ["compensate_next_layer"]
