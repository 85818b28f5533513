"""A deployment's own algorithmic implementations.

Put modules here (``user_algorithms/<name>.py``) and register tasks with
``algorithm_path="user_algorithms.<name>.<callable>"``. A callable is one of:

* a function ``f(X) -> y`` (``X`` a float32 array of shape ``(N, *input_shape)``);
* a class with ``predict(X)`` (and optionally ``fit(X, y)``), created without arguments;
* an object with ``predict(X)``.

Only modules listed in ``PLASTICITY_ALGORITHM_MODULES`` (this package and the project's own
algorithms by default) may be named, and only superusers may set a task's algorithm path:
the code runs inside the web and worker processes. To allow a package installed elsewhere,
add it to the setting or the environment variable (comma-separated), for example
``PLASTICITY_ALGORITHM_MODULES=models_registry.algorithms,models_registry.data.hormone_model,improvement.nn.gain_model,user_algorithms,acme.models``.
See ``models_registry/loading.py`` for the rules.
"""
