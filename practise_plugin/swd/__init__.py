"""Selective Weight Decay (Tessier et al., J. Imaging 2022): ``config`` (options), ``strategy`` (the registered
``"swd"`` strategy and the prune + fine-tune reference), ``masks`` (what the prune removes now),
``regularizer`` (the penalty, for any training loop), ``train`` (the resumable SGD loop), ``prune`` (the one
hard prune) and ``pipeline`` (all of it in order). Kept empty so that reading the options stays cheap."""
