"""Improvement strategies: one module each, found and registered by ``improvement.strategies.registry``.

Import what you need from ``registry`` (the interface) or from a strategy's own module; this
package itself exports nothing, so a strategy module never imports its own package.
"""
