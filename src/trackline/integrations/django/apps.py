"""The Django app `trackline.integrations.django`: listed in `INSTALLED_APPS`, it makes the
`{% load trackline %}` template tags available (the middleware needs no app)."""

from __future__ import annotations

from django.apps import AppConfig


class TracklineConfig(AppConfig):  # type: ignore[misc]
    """Labelled `trackline`, so it cannot clash with an app of the project named `django`."""

    name = "trackline.integrations.django"
    label = "trackline"
    verbose_name = "trackline"
