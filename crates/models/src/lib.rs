//! libtorch-backed velocity networks, autograd helpers and checkpoints.
