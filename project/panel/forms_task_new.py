"""The panel's new-task form: its two steps, and where a refusal of the registry belongs on it.

Step 1 (``TaskFileForm``) takes the file; step 2 (``TaskChoicesForm``) the choices, offered from
the file's preview. The form only checks that each choice is one it offered; whether the data
makes a task is the registry's to say (``improvement.services.task_upload_create``, the REST
upload's service), and ``refusal_field`` puts its message next to the field it concerns.
"""

from __future__ import annotations

import re
from typing import cast

from django import forms
from django.utils.text import slugify

from models_registry.data.preview import UploadPreview
from models_registry.nn.kinds import CLASSES, VALUES
from models_registry.nn.metrics import METRICS
from models_registry.services import RESERVED_TASK_SLUGS

#: Files the registry parses, by extension.
UPLOAD_FORMATS = (".csv", ".npz")
OUTPUT_KIND_CHOICES = [("", "Detected from the target"), (CLASSES, "Classes"), (VALUES, "Values")]
#: Step 2's fields in the order they are shown (the ones a file's format does not use are dropped).
CSV_ONLY = ("target_column",)
NPZ_ONLY = ("inputs_key", "targets_key")
#: The field a refusal prefixed "field: ..." concerns ("rows": the file holds too few for the splits).
PREFIXED = {"metric": "metric", "slug": "slug", "name": "name", "output_kind": "output_kind",
            "target_column": "target_column", "rows": None, "file": None}
_PREFIX = re.compile(r"^([a-z_]+): ")
#: A target that is not a number asked to be values: the output kind is what to change.
_NOT_NUMERIC_VALUES = "regression ('values')"


def metric_groups() -> list[tuple[str, list[tuple[str, str]]]]:
    """The metrics by output kind, as a select's option groups."""
    return [(kind, [(m.name, m.label) for m in METRICS.values() if m.output_kind == kind]) for kind in (CLASSES, VALUES)]


class TaskFileForm(forms.Form):
    """Step 1: the data file."""

    file = forms.FileField(
        error_messages={"required": "Choose a .csv or .npz file to upload.",
                        "empty": "The file is empty: expected a header row of column names, then data rows."})

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not (upload.name or "").lower().endswith(UPLOAD_FORMATS):
            raise forms.ValidationError(f"Expected a .csv or .npz file, got {upload.name!r}.")
        return upload


class TaskChoicesForm(forms.Form):
    """Step 2: what the staged file becomes; the choices offered come from its preview."""

    token = forms.CharField(widget=forms.HiddenInput, max_length=64)
    name = forms.CharField(max_length=120)
    slug = forms.SlugField(max_length=80, required=False, help_text="Defaults to the name, slugified.")
    description = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2}))
    target_column = forms.ChoiceField(help_text="The column the task predicts; every other column is an input.")
    inputs_key = forms.ChoiceField(label="Inputs array")
    targets_key = forms.ChoiceField(label="Targets array")
    output_kind = forms.ChoiceField(choices=OUTPUT_KIND_CHOICES, required=False)
    metric = forms.ChoiceField(choices=[("", "Default for the data"), *metric_groups()], required=False)

    def __init__(self, *args, preview: UploadPreview, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.preview = preview
        names = [(c["name"], c["name"]) for c in preview["columns"] if preview["format"] == "csv" or c["shape"]]
        for name in NPZ_ONLY if preview["format"] == "csv" else CSV_ONLY:
            del self.fields[name]
        for name in self.fields:
            if name in CSV_ONLY + NPZ_ONLY:
                cast(forms.ChoiceField, self.fields[name]).choices = names
        self.initial.setdefault("target_column", preview["default_target"])
        self.initial.setdefault("targets_key", preview["default_target"])
        self.initial.setdefault("inputs_key", preview["default_inputs"])

    @property
    def is_npz(self) -> bool:
        return self.preview["format"] == "npz"

    def clean(self):
        data = super().clean() or {}
        if self.is_npz and data.get("inputs_key") and data.get("inputs_key") == data.get("targets_key"):
            self.add_error("targets_key", "Choose another array than the inputs.")
        slug = slugify(data.get("slug") or data.get("name") or "")
        if slug in RESERVED_TASK_SLUGS:
            self.add_error("slug", f"'{slug}' is the address of this form (/tasks/{slug}/): choose another slug.")
        return data

    def refusal_field(self, message: str) -> str | None:
        """The field a refusal of the registry concerns, None for the file as a whole.

        Prefixed messages ("metric: ...") name it. The parser's messages about the data depend on
        the target chosen (every other CSV column is an input) or, for an NPZ, on the arrays
        chosen, which the message names; a non-numeric target asked to be values is about the
        output kind.
        """
        match = _PREFIX.match(message)
        if match and match.group(1) in PREFIXED:
            return PREFIXED[match.group(1)]
        if _NOT_NUMERIC_VALUES in message:
            return "output_kind"
        if not self.is_npz:
            return "target_column"
        targets, inputs = self.cleaned_data.get("targets_key", ""), self.cleaned_data.get("inputs_key", "")
        if f"'{targets}'" in message or message.startswith(f"{targets} row") or "class" in message:
            return "targets_key"
        if f"'{inputs}'" in message or message.startswith(f"{inputs} row") or "row" in message:
            return "inputs_key"
        return None
