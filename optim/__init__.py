"""``optim``: hand-written SGD, Adam, AdamW and RAdam that reproduce torch.optim step for step,
learning-rate schedules, gradient clipping and weight-decay parameter groups."""
from optim import lr_scheduler
from optim.adam import Adam, AdamW
from optim.clip import clip_grad_norm_
from optim.flat import packed_gradients
from optim.optimizer import Optimizer
from optim.param_groups import weight_decay_groups
from optim.radam import RAdam
from optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RAdam", "clip_grad_norm_", "lr_scheduler",
           "packed_gradients", "weight_decay_groups"]
