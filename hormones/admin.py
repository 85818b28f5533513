from django.contrib import admin
from django.utils import timezone

from hormones.models import Hormone, HormoneEvent


@admin.register(Hormone)
class HormoneAdmin(admin.ModelAdmin):
    list_display = ("name", "current_level", "baseline", "half_life_s", "min_level", "max_level", "updated_at")
    readonly_fields = ("name", "level", "updated_at", "current_level")
    fields = ("name", "current_level", "level", "baseline", "half_life_s", "min_level", "max_level", "updated_at")

    @admin.display(description="current level")
    def current_level(self, obj: Hormone) -> str:
        return f"{obj.level_at(timezone.now()):.4f}"

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(HormoneEvent)
class HormoneEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "hormone", "delta", "level_before", "level_after", "cause")
    list_filter = ("hormone",)
    search_fields = ("cause",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in HormoneEvent._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
