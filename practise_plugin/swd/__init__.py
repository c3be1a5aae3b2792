"""Selective Weight Decay (Tessier et al., J. Imaging 2022): the algorithm, independent of any trainer.

``SWDRegularizer`` plugs into your own loop; ``practise_plugin.strategies.swd`` holds ``SWDConfig``,
the registered ``"swd"`` strategy and the ``magnitude_prune_finetune`` reference.
"""

from .masks import ChannelCriterion, Decision, MagnitudeCriterion, make_criterion
from .regularizer import SWDRegularizer, swd_strength

__all__ = ["ChannelCriterion", "Decision", "MagnitudeCriterion", "SWDRegularizer", "make_criterion", "swd_strength"]
