"""Hyper-Quantization Workbench: measure error and speed of weight-quantization formats."""
__version__ = "0.1.0"
