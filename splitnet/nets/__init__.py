"""The seeds' other models: the MNIST CNN with its depthwise-separable option (``cnn``), what
that option saves, counted and closed-form (``separable``), and LightRNN (``lightrnn``)."""
