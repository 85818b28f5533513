from django.contrib import admin

from events.models import OutboxEvent


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "created_at")
    list_filter = ("type",)
    readonly_fields = ("id", "type", "payload", "created_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
