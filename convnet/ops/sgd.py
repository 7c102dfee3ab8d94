"""The paper's update, one fused pass per parameter buffer (Krizhevsky et al. 2012, section 5):

    v <- momentum * v - weight_decay * lr * w - lr * grad
    w <- w + v

grad is the gradient of the loss (the batch-mean cost); biases take weight_decay = 0. cuda-convnet2's
inc = mom * inc + eps * (grad_logprob - wc * w); w += inc is the same update with v = inc, lr = eps,
weight_decay = wc and grad_logprob = -grad. Rounding is fixed (no fused multiply-add), identical on
every backend:  v' = ((momentum * v) - (float32(lr * weight_decay) * w)) - (lr * grad),  w' = w + v'.
"""
from ._dispatch import backend_of

__all__ = ["sgd_update"]


def sgd_update(w, v, grad, lr, momentum, weight_decay):
    """Updates w and v in place (same shape, three different buffers)."""
    backend_of(w).sgd_update(w, v, grad, float(lr), float(momentum), float(weight_decay))
