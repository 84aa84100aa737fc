"""Cluster settings: secrets have no default here."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True

# Behind PgBouncer in transaction mode (k8s: the CloudNativePG Pooler) a named cursor
# (QuerySet.iterator()) can outlive the transaction's server connection: fetch instead.
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True

# HTTPS only, behind an ingress that terminates TLS and says so in X-Forwarded-Proto.
# The kubelet's probes and Prometheus reach the pods over plain HTTP: never redirected.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
