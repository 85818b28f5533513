"""Control-panel routes (the overview itself is ``/``, named ``overview``, in project/urls.py)."""

from django.urls import path

from project.panel import views

app_name = "panel"

urlpatterns = [
    path("tasks/", views.tasks, name="tasks"),
    path("tasks/<slug:slug>/rows", views.task_rows_append_control, name="task-rows"),
    path("models/<int:pk>/", views.model_detail, name="model"),
    path("models/<int:pk>/activate", views.version_activate_control, name="model-activate"),
    path("models/<int:pk>/rollback", views.version_rollback_control, name="model-rollback"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/cancel", views.run_cancel_control, name="run-cancel"),
    path("hormones/", views.hormones, name="hormones"),
    path("config/", views.config, name="config"),
    path("config/loop", views.loop_control, name="loop"),
    path("config/cycle", views.cycle_control, name="cycle"),
    path("config/run", views.run_now, name="run-now"),
]
