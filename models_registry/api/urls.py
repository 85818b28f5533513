"""REST routes of models_registry: tasks, task creation jobs, models, versions (no trailing slashes)."""

from rest_framework.routers import SimpleRouter

from models_registry.api.views import (
    ModelVersionViewSet,
    NeuralModelViewSet,
    TaskCreationJobViewSet,
    TaskViewSet,
)

router = SimpleRouter(trailing_slash=False)
router.register("tasks", TaskViewSet, basename="task")
router.register("task-jobs", TaskCreationJobViewSet, basename="task-job")
router.register("models", NeuralModelViewSet, basename="model")
router.register("versions", ModelVersionViewSet, basename="version")

urlpatterns = router.urls
