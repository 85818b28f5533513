from django.db import models


class OutboxEvent(models.Model):
    """One live event, written in the same transaction as the state change it announces.

    The primary key is the event id browsers use to ask for what they missed after a
    reconnect; rows are trimmed by age, never rewritten.
    """

    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"#{self.id} {self.type}"

    def as_message(self) -> dict:
        return {"id": self.id, "type": self.type, "payload": self.payload, "at": self.created_at.isoformat()}
