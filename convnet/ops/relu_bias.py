"""The backward pass of a fused bias + ReLU (conv with shared biases, fc; neuron=relu), whose
forward the conv_fwd / fc_fwd epilogue applies: the ReLU's gradient and the bias gradient in one
pass over dy instead of neuron_bwd then bias_bwd (csrc/common/relu_bias.h)."""
from ._dispatch import backend_of

__all__ = ["relu_bias_bwd"]


def relu_bias_bwd(dy, y, db, accumulate=False):
    """dy (F, ...) := dy * (y > 0), in place (neuron_bwd's relu, the same bits); db (F,) (+)= the
    masked dy summed over everything but the first axis. y: the layer's output after the ReLU.
    Returns dy."""
    if not len(dy.shape):
        raise ValueError("relu_bias_bwd: dy must be (F, ...), got a scalar")
    backend_of(dy).relu_bias_bwd(dy, y, db, bool(accumulate))
    return dy
