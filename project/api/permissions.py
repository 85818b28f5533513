"""Who may do what: everyone authenticated reads, operators (``is_staff``) write."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission


class IsOperatorOrReadOnly(BasePermission):
    """Reads for any authenticated user; writes only for operators (staff)."""

    message = "Only an operator (a staff user) may change this."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or bool(user.is_staff)


class IsOperator(BasePermission):
    """Every method needs an operator (loop control and other actions)."""

    message = "Only an operator (a staff user) may do this."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)
