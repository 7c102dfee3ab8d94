"""Small training runs the tests of predict, export and show start from (a few SGD steps on the
generated dataset, checkpoints and log.jsonl in a directory of their own)."""
import os

from convnet.train import main as train_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "layers", "tiny.cfg")
TINY_DATA = "synthetic:size=12,train=64,test=24"


def train_small(directory, config=TINY, data=TINY_DATA, epochs=2, seed=0):
    """Trains `config` on `data` in batches of 16 into `directory`; returns its path."""
    assert train_main([config, "--data", data, "--batch-size", "16", "--epochs", str(epochs),
                       "--seed", str(seed), "--save-dir", str(directory)]) == 0
    return str(directory)
