"""Control-panel routes (the overview itself is ``/``, named ``overview``, in project/urls.py)."""

from django.urls import path

from project.panel import views, views_compare, views_lists, views_serving, views_task, views_task_new

app_name = "panel"

urlpatterns = [
    path("tasks/", views.tasks, name="tasks"),
    # Before tasks/<slug>/: "new" is the form, not a task (the form refuses the slug "new").
    path("tasks/new/", views_task_new.task_new, name="task-new"),
    path("tasks/new/create", views_task_new.task_new_create, name="task-new-create"),
    path("tasks/<slug:slug>/rows", views.task_rows_append_control, name="task-rows"),
    path("tasks/<slug:slug>/serving", views_serving.task_serving_control, name="task-serving"),
    path("tasks/<slug:slug>/", views_task.task_detail, name="task"),
    path("models/", views_lists.models, name="models"),
    path("runs/", views_lists.runs, name="runs"),
    path("models/compare/", views_compare.compare, name="compare"),
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
