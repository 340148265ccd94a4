"""The network as plain data: reading Keras models, the zipped network, its ops, the joint input."""
