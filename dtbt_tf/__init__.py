"""dtbt_tf: differentiable tracking-based training for multi-source sound source localisation."""
from dtbt_tf.artifacts import shipped_model  # light: no TensorFlow import
from dtbt_tf.version import __version__

__all__ = ["shipped_model", "__version__"]
