"""nn.Modules for Caffe semantics that torch's own layers do not reproduce."""
