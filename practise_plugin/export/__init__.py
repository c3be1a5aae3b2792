"""Artifacts a run leaves: the OpenVINO IR with its sidecar (``ir``), IRs with real low-bit UDFC weights
(``lowbit``), and the run report (``report``). This file holds the vocabulary ``--help`` shows, so help
screens do not import OpenVINO."""

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

# Pass criteria of the post-export check. fp32/fp16: max |IR - torch| over the outputs must stay within
# rtol x max |torch output| (fp32 differs from torch only by summation order; fp16 stores weights with a
# 10-bit mantissa). int8 changes every activation, so element errors say little: the IR must instead
# agree with torch on the top-1 class and keep the output direction (cosine similarity).
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"rtol": 1e-4},
    "fp16": {"rtol": 1e-2},
    "int8": {"min_top1_agreement": 0.9, "min_mean_cosine": 0.98},
}
