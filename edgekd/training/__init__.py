"""Training: one supervised loop shared by teacher training and distillation (loop.py), accuracy
of a torch model on a split (evaluate.py), and the device it runs on (device.py)."""

from edgekd.training.device import TrainDevice, resolve_device
from edgekd.training.evaluate import evaluate_accuracy, predict_logits
from edgekd.training.loop import FitResult, fit

__all__ = ["FitResult", "TrainDevice", "evaluate_accuracy", "fit", "predict_logits", "resolve_device"]
