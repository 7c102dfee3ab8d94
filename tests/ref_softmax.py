"""Float64 references for softmax and the logistic-regression cost, over the class dimension of
(K, N) arrays (image index innermost)."""
import numpy as np


def softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def softmax_bwd(dp, p):
    return p * (dp - np.sum(p * dp, axis=0, keepdims=True))


def nll_from_logits(x, labels):
    x = np.asarray(x, np.float64)
    m = x.max(axis=0)
    lse = m + np.log(np.exp(x - m).sum(axis=0))
    return lse - x[labels, np.arange(x.shape[1])]


def rank(scores, labels):
    """Classes scored strictly above the label (ties count for the label)."""
    s = np.asarray(scores)
    return (s > s[labels, np.arange(s.shape[1])]).sum(axis=0)


def stats(nll, r):
    return {"logprob": float(np.sum(nll)), "top1": int(np.sum(r >= 1)), "top5": int(np.sum(r >= 5))}


def onehot(labels, k):
    o = np.zeros((k, len(labels)))
    o[labels, np.arange(len(labels))] = 1
    return o


def xent_bwd(p, labels, scale):
    return scale * (p - onehot(labels, p.shape[0]))


def logreg_nll(p, labels):
    pl = np.asarray(p, np.float64)[labels, np.arange(p.shape[1])]
    return -np.log(np.maximum(pl, np.finfo(np.float32).tiny))


def logreg_bwd(p, labels, scale):
    g = np.zeros(p.shape)
    idx = (labels, np.arange(p.shape[1]))
    g[idx] = -scale / np.maximum(np.asarray(p, np.float64)[idx], np.finfo(np.float32).tiny)
    return g
