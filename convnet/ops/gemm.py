"""SGEMM (csrc/*/gemm*): the building block of convolution and fully-connected layers."""
from ..device import backend
from ..tensor import empty
from ._dispatch import backend_of, device_of

__all__ = ["sgemm", "sgemm_variant_count"]


def sgemm(a, b, c=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, m=None, n=None,
          k=None, variant=0):
    """c = alpha * op(a) @ op(b) + beta * c, op(x) = x.T if trans_x, on 2-d float32 tensors.

    By default op(a) is (m, k) and op(b) is (k, n) in full; giving m, n, k makes them the top-left
    blocks of the stored arrays (whose row lengths act as leading dimensions), and c's top-left
    (m, n) block receives the result. beta == 0 never reads c. `variant` selects a numbered
    kernel (0 = the default; see sgemm_variant_count). Returns c."""
    for name, v in (("m", m), ("n", n), ("k", k)):
        if v is not None and int(v) < 1:
            raise ValueError(f"sgemm: {name} must be >= 1 (or None: the whole array), got {v}")
    if c is None:
        if beta != 0:
            raise ValueError("sgemm: beta != 0 needs an existing c")
        rows = m if m is not None else a.shape[1 if trans_a else 0]
        cols = n if n is not None else b.shape[0 if trans_b else 1]
        c = empty((rows, cols), device=device_of(a))
    backend_of(a).sgemm(a, b, c, bool(trans_a), bool(trans_b), float(alpha), float(beta),
                        None if m is None else int(m), None if n is None else int(n),
                        None if k is None else int(k), int(variant))
    return c


def sgemm_variant_count(device="cpu"):
    """How many numbered sgemm variants the backend of `device` has (valid: 0 .. count-1)."""
    return backend(device).sgemm_variant_count()
