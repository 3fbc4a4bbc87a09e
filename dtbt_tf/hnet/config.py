"""Settings of a Hnet training run, TensorFlow-free (``scripts/train_hnet.py --help`` reads its defaults here)."""
from __future__ import annotations

from dataclasses import dataclass

CACHE_DIR = "cache/hnet"  # cached training/validation matrices
EVAL_SIZE = 100_000  # fresh matrices per evaluation set scored after training (evaluate_hnet)
EVAL_SEED = 12345  # first seed of the evaluation sets (set k uses EVAL_SEED + k)
FRESH_SIZE = 20_000  # fresh matrices per evaluation set scored after every epoch (history)


@dataclass(frozen=True)
class HnetTrainConfig:
    """Everything a Hnet training run depends on (saved next to the model)."""

    n_max: int = 2
    train_size: int = 405_000
    val_size: int = 40_500
    epochs: int = 40
    batch_size: int = 512
    lr: float = 1.5e-3  # peak learning rate of the warm-up + cosine schedule
    warmup_epochs: float = 1.0
    final_lr_fraction: float = 0.002  # cosine decays to lr * this
    clipnorm: float = 0.0  # Adam gradient-norm clipping (0 = off); high peak rates can diverge without it
    loss_weights: tuple = (1.0, 1.0, 1.0)  # association, row_max, col_max
    units: int = 128
    # architecture options of build_hnet (see dtbt_tf.models.hnet for what each deviation from the paper buys)
    bidirectional: bool = True
    relative_inputs: bool = True
    input_scale: float = 10.0
    head_layers: int = 1
    continuous_fraction: float = 0.1  # share of training matrices with continuous (non-grid) directions
    training_layout_fraction: float = 0.0  # share of matrices in the DOAnet training layout (rest: generator)
    hard_fraction: float = 0.0  # share of near-tie training-layout matrices (association margin < hard_margin)
    hard_margin: float = 0.1
    init_from: str = ""  # .keras Hnet to start from (fine-tuning); "" = random initialisation
    seed: int = 0
    jit_compile: bool = True  # XLA-compiled training step: faster on CPU for this small model

    def __post_init__(self):
        if self.n_max < 1:
            raise ValueError(f"n_max must be >= 1, got {self.n_max}")
        for name in ("train_size", "val_size", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("continuous_fraction", "training_layout_fraction", "hard_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.training_layout_fraction + self.hard_fraction > 1.0:
            raise ValueError(f"training_layout_fraction + hard_fraction must be <= 1, got "
                             f"{self.training_layout_fraction} + {self.hard_fraction}")
        if self.clipnorm < 0:
            raise ValueError(f"clipnorm must be >= 0 (0 = off), got {self.clipnorm}")
        if not self.hard_margin > 0:
            raise ValueError(f"hard_margin must be > 0, got {self.hard_margin}")
        if len(self.loss_weights) != 3:
            raise ValueError(f"loss_weights needs 3 values (association, row_max, col_max), got {self.loss_weights}")
        object.__setattr__(self, "loss_weights", tuple(float(w) for w in self.loss_weights))
