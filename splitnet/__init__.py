"""splitnet: structural-split model parallelism of neural networks over MPI.

Train a net on part of the data, split its hidden neurons into groups, train the pieces
independently (one MPI rank each), recombine, and measure test accuracy per combination.
"""

__version__ = "0.1.0"
