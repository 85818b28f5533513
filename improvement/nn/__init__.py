"""Pure torch/numpy improvement operators: pruning, distillation and genetic search.

Nothing under this package imports Django; strategies in ``improvement`` call
these with modules, arrays and configs and get plain results back. Import the
submodules directly (``improvement.nn.pruning`` etc.).
"""
