"""Scalable learned image codec: RNN residual coder with an RNN hyperprior."""
