"""The data layer: plain numpy/scikit-learn code with no Django import.

* ``splits``        deterministic train/validation/test splits
* ``hormone_model`` the HPA-axis simulator behind the ``hormone-response`` task
* ``builtin``       the three built-in datasets (``BUILTIN_DATASETS``)
* ``upload``        CSV/NPZ parsing and generator (sampler) specs
* ``errors``        ``DatasetError`` and ``ImplementationError``
"""

from models_registry.data.errors import DatasetError, ImplementationError

__all__ = ["DatasetError", "ImplementationError"]
