"""pytest: SQLite unless DATABASE_URL points at PostgreSQL.

No `.env` file is read (a developer's would change what the tests run against): set
in os.environ before base.py reads it, so the processes the tests start (replicas,
workers, fleets on config.settings.local) skip it too. tests/test_env_file.py proves it.
"""

import os

os.environ["DJANGO_READ_ENV_FILE"] = "false"

from .base import *  # noqa: F403

DEBUG = False
WHITENOISE_USE_FINDERS = True
STORAGES = {"staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
