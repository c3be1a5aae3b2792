"""practise-plugin: few-shot and data-free network acceleration."""

__version__ = "0.1.0"
