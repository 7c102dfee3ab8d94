"""convnet: a revival of cuda-convnet as a Python package."""
