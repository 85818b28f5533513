"""Loading an algorithmic implementation by dotted path, only from the modules a deployment allows.

A task's ``algorithm_path`` names code that runs on the server (at task creation, in the
workers and in every web process that serves or shadow-checks the task), so it is not
"any importable callable": ``os.system``, ``pickle.loads`` or ``builtins.eval`` would run
what a request sends. Three rules, checked in this order:

1. the path is a plain dotted path (identifiers joined by dots, or ``module:attribute``) with
   no private or dunder part;
2. its module is one of ``PLASTICITY_ALGORITHM_MODULES`` or inside one of them (a package
   prefix) — **checked before anything is imported**, so naming a module outside the list
   never runs that module's code;
3. the object it names is *defined* in an allowed module (its ``__module__``), so a name
   an allowed module merely imported (``from os import system``) is refused too.

The default list is the project's own algorithms (the classical models, the hormone model, the
loop's own gain predictor baseline) and the ``user_algorithms`` package at the
top of the repository, the documented place for a deployment's own code. A deployment adds
modules with the setting or the environment variable (comma-separated), for example
``PLASTICITY_ALGORITHM_MODULES=models_registry.algorithms,models_registry.data.hormone_model,improvement.nn.gain_model,user_algorithms,acme.models``.
Only superusers may set or change a task's algorithm path (API and admin).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from django.conf import settings

from models_registry.algorithms import FunctionImplementation, Implementation
from models_registry.data.errors import ImplementationError

DEFAULT_ALGORITHM_MODULES = ("models_registry.algorithms", "models_registry.data.hormone_model",
                             "improvement.nn.gain_model", "user_algorithms")


def algorithm_modules() -> tuple[str, ...]:
    """The modules (and packages) algorithms may come from, as configured now."""
    configured = getattr(settings, "PLASTICITY_ALGORITHM_MODULES", None)
    if configured is None:
        return DEFAULT_ALGORITHM_MODULES
    if isinstance(configured, str):
        configured = configured.split(",")
    return tuple(name.strip() for name in configured if name and name.strip())


def module_allowed(module_name: str, allowed: tuple[str, ...] | None = None) -> bool:
    allowed = algorithm_modules() if allowed is None else allowed
    return any(module_name == name or module_name.startswith(name + ".") for name in allowed)


# A dotted path is identifiers joined by dots, optionally "module:attr". Anything else
# (slashes, spaces, dunder names) is refused before we touch the import system.
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"^{_IDENT}(\.{_IDENT})*([.:]{_IDENT})$")


def load_callable(dotted_path: str) -> Callable[..., Any]:
    """Import ``package.module.attr`` (or ``package.module:attr``) and return the callable.

    Raises ``ImplementationError`` with a message naming what is wrong: a malformed path, a
    private attribute, a module outside ``PLASTICITY_ALGORITHM_MODULES`` (refused before it
    is imported), a module that cannot be imported (or fails while importing), a missing
    attribute, one defined outside the allowed modules, or one that is not callable.
    """
    if not isinstance(dotted_path, str) or not dotted_path.strip():
        raise ImplementationError(
            "implementation path must be a non-empty dotted path like 'package.module.func'"
        )
    path = dotted_path.strip()
    if not _DOTTED.match(path):
        raise ImplementationError(
            f"'{path}' is not a dotted path: expected 'package.module.attribute' (letters, digits, "
            "underscores, separated by dots)"
        )
    if ":" in path:
        module_name, attr = path.split(":", 1)
    else:
        module_name, _, attr = path.rpartition(".")
    if attr.startswith("_") or any(part.startswith("__") for part in module_name.split(".")):
        raise ImplementationError(f"'{path}': private or dunder names cannot be used as implementations")
    allowed = algorithm_modules()
    if not module_allowed(module_name, allowed):
        raise ImplementationError(
            f"'{path}': module '{module_name}' is not one this deployment allows algorithms from "
            f"({', '.join(allowed) or 'none'}); put the code in one of them, or add its module to "
            "PLASTICITY_ALGORITHM_MODULES"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ImplementationError(f"'{path}': module '{module_name}' cannot be found ({exc})")
    except Exception as exc:  # any error raised while the module body runs
        raise ImplementationError(f"'{path}': importing '{module_name}' failed: {type(exc).__name__}: {exc}")
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ImplementationError(f"'{path}': module '{module_name}' has no attribute '{attr}'")
    if not callable(obj):
        raise ImplementationError(f"'{path}' is a {type(obj).__name__}, not a callable (function or class)")
    defined_in = getattr(obj, "__module__", None)
    if not isinstance(defined_in, str) or not module_allowed(defined_in, allowed):
        raise ImplementationError(
            f"'{path}' is defined in '{defined_in}', which is not one this deployment allows algorithms from "
            f"({', '.join(allowed) or 'none'}); '{module_name}' only imported it"
        )
    return obj


def as_implementation(obj: Any) -> Implementation:
    """Turn what a dotted path names into an object following the protocol.

    * an object with ``predict`` is returned as is (given a no-op ``fit`` if it lacks one);
    * a class is instantiated with no arguments, then treated as above;
    * any other callable is treated as a function ``f(X) -> y`` and wrapped.
    """
    if isinstance(obj, type):
        try:
            instance = obj()
        except Exception as exc:
            raise ImplementationError(
                f"class {obj.__qualname__} cannot be created without arguments: {type(exc).__name__}: {exc}"
            )
        if not callable(getattr(instance, "predict", None)):
            if callable(instance):
                return FunctionImplementation(instance, name=obj.__qualname__)
            raise ImplementationError(f"class {obj.__qualname__} has no predict(X) method")
        obj = instance
    if callable(getattr(obj, "predict", None)):
        if callable(getattr(obj, "fit", None)):
            return obj
        return _WithNoopFit(obj)
    if callable(obj):
        return FunctionImplementation(obj)
    raise ImplementationError(f"{obj!r} is neither callable nor has a predict(X) method")


class _WithNoopFit:
    """Adds a no-op ``fit`` to a predict-only object."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> _WithNoopFit:
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.inner.predict(X))


def load_implementation(dotted_path: str, params: dict[str, Any] | None = None) -> Implementation:
    """``as_implementation(load_callable(dotted_path))``: what task creation and serving use.

    With ``params`` (settings found by ``models_registry.tuning``) the path must name a class,
    which is created with them as keyword arguments.
    """
    obj = load_callable(dotted_path)
    if params:
        if not isinstance(obj, type):
            raise ImplementationError(f"'{dotted_path}' is not a class: it cannot take the settings {params}")
        try:
            obj = obj(**params)
        except Exception as exc:
            raise ImplementationError(
                f"class {obj.__qualname__} cannot be created with {params}: {type(exc).__name__}: {exc}"
            )
    return as_implementation(obj)
