"""REST views of hormones: current levels, their events, and the brain state."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hormones.api.serializers import BrainStateSerializer, HormoneEventSerializer, HormoneSerializer
from hormones.choices import HORMONE_DEFAULTS, HormoneName
from hormones.models import Hormone, HormoneEvent
from hormones.selectors import brain_state_history, brain_state_latest, hormone_levels_current
from project.api.pagination import Pagination


class HormoneListView(APIView):
    @extend_schema(summary="Hormone levels now", tags=["hormones"], responses={200: HormoneSerializer(many=True)},
                   description="Every hormone's current level (decayed from its last event to now), its "
                               "baseline, half-life and bounds.")
    def get(self, request: Request) -> Response:
        levels = hormone_levels_current()
        stored = {h.name: h for h in Hormone.objects.all()}
        rows = []
        for name, (baseline, half_life, low, high) in HORMONE_DEFAULTS.items():
            hormone = stored.get(name)
            rows.append({
                "name": name, "label": HormoneName(name).label, "level": levels[name],
                "baseline": hormone.baseline if hormone else baseline,
                "half_life_s": hormone.half_life_s if hormone else half_life,
                "min_level": hormone.min_level if hormone else low,
                "max_level": hormone.max_level if hormone else high,
                "updated_at": hormone.updated_at if hormone else None,
            })
        return Response(HormoneSerializer(rows, many=True).data)


class HormoneEventFilter(django_filters.FilterSet):
    hormone = django_filters.ChoiceFilter(field_name="hormone__name", choices=HormoneName.choices)
    cause = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the cause.")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte",
                                             help_text="At or after (ISO 8601).")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lte",
                                             help_text="At or before (ISO 8601).")

    class Meta:
        model = HormoneEvent
        fields = ["hormone", "cause"]


@extend_schema(summary="Hormone events", tags=["hormones"],
               description="Releases (positive delta) and suppressions (negative), newest first, with cause.")
class HormoneEventListView(generics.ListAPIView):
    serializer_class = HormoneEventSerializer
    pagination_class = Pagination
    filterset_class = HormoneEventFilter
    queryset = HormoneEvent.objects.select_related("hormone").order_by("-created_at", "-id")


class BrainStateQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(required=False, default=60, min_value=0, max_value=1000)


class BrainStateView(APIView):
    @extend_schema(
        operation_id="brain_state", summary="Brain state", tags=["hormones"], responses={200: BrainStateSerializer},
        parameters=[OpenApiParameter("limit", int, description="How many recent snapshots (0-1000, default 60).")],
        description="The latest snapshot of hormones, resources, queue and health, and recent ones.",
    )
    def get(self, request: Request) -> Response:
        query = BrainStateQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        history = list(brain_state_history(limit=limit)) if limit else []
        return Response(BrainStateSerializer({"latest": brain_state_latest(), "history": history}).data)
