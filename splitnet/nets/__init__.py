"""The seeds' other models: the MNIST CNN (with a depthwise-separable option) and LightRNN."""
