# runstate operator image: `docker build -t ghcr.io/runstate/runstate:0.1.0 .`
# (for kind, see kind-config.yaml). Needs BuildKit (the default builder) for RUN --mount.

# Build stage: wheels of runstate and runstate-stores plus wheels of all their dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
# The layout pyproject.toml maps: the runstate package from operator/runstate; the state-store
# library is its own distribution in stores/ (runstate-stores, package runstate_stores). The dev
# tools (devtools/) are not part of the image.
COPY pyproject.toml README.md ./
COPY stores ./stores
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./stores .

# Final stage: the wheels installed offline into a venv; the wheels themselves are only
# bind-mounted, so they add no layer.
FROM python:3.11-slim
ENV PATH=/opt/runstate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/runstate \
    && /opt/runstate/bin/pip install --no-cache-dir --no-index --find-links=/wheels runstate \
    && groupadd --system --gid 65532 runstate \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin runstate
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["runstate"]
CMD ["operator"]
