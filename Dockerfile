# runstate operator image.
#
# With Docker (BuildKit, the default builder):
#   docker build -t ghcr.io/runstate/runstate:0.1.0 .            (make image; for kind, see
#   kind-config.yaml)
# Without a Docker engine, on a Debian machine (what CI and the dev cluster do):
#   python -m runstate_dev image build                          (make image-local)
# which builds a local base from Debian bookworm's packages (debootstrap: python3, python3-venv,
# ca-certificates) and runs `buildah bud --isolation chroot --build-arg BASE=<that base>`, then
# unpacks the image into the process kubelet's image store.
#
# BASE is any image with Python 3.11 as `python3` (with its venv module) and useradd/groupadd:
# python:3.11-slim (the default; its python3 is /usr/local/bin/python3) or Debian's own
# (/usr/bin/python3). The venv is made in the final stage by the final stage's own python3, so
# its interpreter path is always that of the image it runs in.
ARG BASE=python:3.11-slim

# Build stage: wheels of runstate and runstate-stores plus wheels of all their dependencies.
FROM ${BASE} AS build
WORKDIR /src
# The layout pyproject.toml maps: the runstate package from operator/runstate; the state-store
# library is its own distribution in stores/ (runstate-stores, package runstate_stores). The dev
# tools (devtools/) are not part of the image.
COPY pyproject.toml README.md ./
COPY stores ./stores
COPY operator ./operator
# A throwaway venv for pip: Debian's python3 has no pip of its own (python3-venv brings one).
RUN python3 -m venv /tmp/pip \
    && /tmp/pip/bin/pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels \
       ./stores .

# Final stage: the wheels installed offline into a venv; the wheels themselves are only
# bind-mounted, so they add no layer (BuildKit and buildah >= 1.24 both mount from a stage).
FROM ${BASE}
ENV PATH=/opt/runstate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/runstate \
    && /opt/runstate/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
       --find-links=/wheels runstate \
    && /opt/runstate/bin/pip uninstall --yes --disable-pip-version-check pip setuptools \
    && groupadd --system --gid 65532 runstate \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin runstate
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["runstate"]
CMD ["operator"]
