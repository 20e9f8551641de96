"""The seeds' parallel systems beside the core: allreduce algorithms and their cost model, the
neuron-chunk (tensor-parallel) MLP and pruning, data-parallel training with compressed gradients."""
