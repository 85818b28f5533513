"""Pure torch/numpy neural code: genomes, training, evaluation and runtimes.

Nothing under this package imports Django, so it is tested without a database.
Import from the submodules (``models_registry.nn.genome`` etc.); this package
file stays empty so that importing one submodule does not pull in onnxruntime.
"""
