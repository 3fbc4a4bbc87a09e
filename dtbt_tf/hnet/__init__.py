"""Hnet training data, training, evaluation and export (paper III-A / IV-A, DESIGN 3); the network itself is
:mod:`dtbt_tf.models.hnet`.

Modules: ``config`` (HnetTrainConfig and run defaults, TensorFlow-free), ``data`` (seeded matrices and targets),
``evaluation`` (scores, Keras metrics, fresh-matrix evaluation), ``training`` (trainer and the whole job),
``card`` (SavedModel export and MODEL_CARD.md). The names below load their module on first use, so importing
this package (and ``dtbt_tf.hnet.config``) does not import TensorFlow.
"""
from __future__ import annotations

import importlib

_MODULE_OF = {
    "HnetTrainConfig": "config",
    "make_hnet_data": "data",
    "load_or_make_hnet_data": "data",
    "sample_directions": "data",
    "targets": "data",
    "training_data": "data",
    "AssociationF1": "evaluation",
    "ExactMatch": "evaluation",
    "association_scores": "evaluation",
    "evaluate_hnet": "evaluation",
    "predict_association": "evaluation",
    "compile_hnet": "training",
    "read_history": "training",
    "run_hnet_training": "training",
    "train_hnet": "training",
    "export_hnet": "card",
    "model_card": "card",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
