"""Fine-tuning a shipped network on the user's own experiment (issue 17).

The HR keys and their LR frames are real training pairs. :func:`finetune` trains for a
bounded time on some keys, scores by leave-one-key-out on the others before and after, keeps
the better weights and saves them with their provenance. Modules: :mod:`.split` (which keys
train, which validate: the leakage rule), :mod:`.pairs` (the training items), :mod:`.types`
(settings, progress, scores, result), :mod:`.weights` (what can be fine-tuned, from which
weights), :mod:`.scoring` (the before/after leave-one-key-out score), :mod:`.runner` (the
run). Every name below is importable from here.
"""

from napari_xfusion.app.finetune.pairs import KeyPairs, Pair
from napari_xfusion.app.finetune.runner import finetune, iter_finetune
from napari_xfusion.app.finetune.scoring import score_weights
from napari_xfusion.app.finetune.split import FinetuneError, KeySplit, split_keys
from napari_xfusion.app.finetune.types import (
    FinetuneProgress,
    FinetuneResult,
    FinetuneSettings,
    LooScore,
)
from napari_xfusion.app.finetune.weights import network_methods, source_weights

__all__ = [
    "FinetuneError",
    "FinetuneProgress",
    "FinetuneResult",
    "FinetuneSettings",
    "KeyPairs",
    "KeySplit",
    "LooScore",
    "Pair",
    "finetune",
    "iter_finetune",
    "network_methods",
    "score_weights",
    "split_keys",
    "source_weights",
]
