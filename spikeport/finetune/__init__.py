"""Fine-tuning a converted network through T timesteps with torch.

`SpikingNet` is the float mode of the reference simulator as a torch module (one layer per IR
op, registry in `layers.LAYERS`); `finetune` trains its weights, biases and thresholds with
surrogate gradients through time; `finetune_files` is the file-level verb behind
`spikeport finetune` and runs unchanged under torchrun (DistributedDataParallel).
"""

from spikeport.finetune.api import finetune_files, teacher_logits, teacher_model
from spikeport.finetune.augment import Augment
from spikeport.finetune.layers import LAYERS, make_layer
from spikeport.finetune.module import SpikingNet
from spikeport.finetune.train import METHOD, Result, Settings, finetune

__all__ = [
    "Augment",
    "LAYERS",
    "METHOD",
    "Result",
    "Settings",
    "SpikingNet",
    "finetune",
    "finetune_files",
    "teacher_logits",
    "teacher_model",
    "make_layer",
]
