# syntax=docker/dockerfile:1
# tictac-fleet image: one image for the web replicas (gunicorn + uvicorn worker), the job
# workers (`python manage.py run_workers`) and the migration Job; Kubernetes picks the command.
#
#   docker build -t tictac-fleet:0.1.0 .                            # the app (last stage)
#   docker build --target loadtest -t tictac-fleet-loadtest:0.1.0 .  # Locust + loadtest/ + gameclient/ (k8s/components/locust)
#
# Stages: base (Python, env) -> build (venv from wheels only, collectstatic, bytecode)
#         -> runtime (venv + app, non-root, no compilers, no package manager run).
# No HEALTHCHECK: Kubernetes probes /healthz (liveness) and /readyz (readiness) itself.

FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app

# --- build: the pinned runtime requirements, as wheels only (nothing is compiled) -----------
FROM base AS build
COPY requirements/base.txt requirements/production.txt requirements/
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --only-binary=:all: -r requirements/production.txt
COPY . .
# Static files for whitenoise's manifest storage, collected into STATIC_ROOT (/app/var/static).
# The secret and hosts below exist only for this command; the cluster gives the real ones.
RUN DJANGO_SETTINGS_MODULE=config.settings.production \
    SECRET_KEY=collectstatic-only-not-a-secret \
    ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --noinput \
    && python -m compileall -q -j 0 /app

# --- loadtest: Locust, loadtest/ and the protocol codec (gameclient/), requirements/loadtest.txt
FROM base AS loadtest-build
COPY requirements/ requirements/
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --only-binary=:all: -r requirements/loadtest.txt

FROM base AS loadtest
RUN groupadd --system --gid 10001 tictac \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tictac
COPY --from=loadtest-build /opt/venv /opt/venv
COPY gameclient/ /app/gameclient/
COPY loadtest/ /app/loadtest/
USER 10001:10001
EXPOSE 8089 5557
CMD ["locust", "-f", "/app/loadtest/locustfile.py"]

# --- runtime: the default target (last stage) -----------------------------------------------
FROM base AS runtime
RUN groupadd --system --gid 10001 tictac \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tictac
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# gunicorn (25.1+) opens a control socket in $XDG_RUNTIME_DIR, else in $HOME/.gunicorn, and
# this user has no home: /tmp is writable (an emptyDir in Kubernetes).
ENV XDG_RUNTIME_DIR=/tmp
USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "config.asgi:application", "-c", "deploy/gunicorn.conf.py"]
