"""Loss functions as pure tensor functions."""

from conun.losses.contrastive import contrastive_unlearning_loss

__all__ = ["contrastive_unlearning_loss"]
