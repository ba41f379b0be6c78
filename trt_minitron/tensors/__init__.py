"""Tensors without a model: dtypes, tensor metadata, layouts of output tensors, the tensor-parallel mapping,
and safetensors files (header, streaming writer, plain-read reader). Imports no torch until a tensor is made."""
