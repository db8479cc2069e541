"""Scalable learned image codec: RNN residual coder with an RNN hyperprior."""

import warnings

# CompressAI imports torch_geometric when it is installed, which calls the deprecated torch.jit.script at
# import time; the warning says nothing about this codec and would open every CLI command's output.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
