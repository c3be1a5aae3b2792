"""Running models and measuring them: OpenVINO conversion and CPU compilation, latency (single models,
interleaved A/B ratios, the per-block table) and accuracy. This file holds the vocabulary ``--help`` shows."""

BACKENDS: tuple[str, ...] = ("openvino", "torch", "cuda", "macs")
MEASURE_TIME_S = 1.0  # default budget of measure_latency: ~200 samples of a 5 ms model
COMPARE_TIME_S = 2.0  # default budget of one A/B comparison (both models share it)
