"""dtbt_tf: differentiable tracking-based training for multi-source sound source localisation."""
__version__ = "0.1.0"
