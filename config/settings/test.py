"""pytest: SQLite unless DATABASE_URL points at PostgreSQL."""

from .base import *  # noqa: F403

DEBUG = False
WHITENOISE_USE_FINDERS = True
STORAGES = {"staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
