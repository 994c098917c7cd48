# syntax=docker/dockerfile:1
# One image, both processes: `litellm-scim endpoint` and `litellm-scim operator`.
#   docker build -t litellm-scim-operator:0.1.0 .
# Kubernetes probes check health (see the Helm chart), so there is no HEALTHCHECK here.

# The base image by digest, so a rebuild gets the same bytes until someone moves the pin on purpose.
# python:3.11-slim (Python 3.11.16, Debian trixie), multi-platform index digest as published in the
# Docker Official Images' record of that tag: github.com/docker-library/repo-info,
# repos/python/remote/3.11-slim.md at commit cc54a6ea2f4eadb0312329a5c74d91778ee65aec (built
# 2026-09-01). To move it: the digest `docker buildx imagetools inspect python:3.11-slim` prints.
# A build may pass --build-arg PYTHON_IMAGE=... to use another (e.g. a mirror, or a local stand-in).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9534e5a8e315485d4061ed659af0fd78a284c015f9b73661b41d6bab25604534

# --- builder: a virtualenv with the locked dependencies and the project --------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Every file pip fetches is checked against the hash in the lock files (see `make lock`): first the
# installer and the build backend, then every runtime dependency as a prebuilt wheel. No sdist is
# built, so no unlocked build dependency is fetched either.
COPY requirements-build.lock requirements.lock ./
RUN python3 -m venv /opt/venv \
    && pip install --require-hashes --only-binary=:all: -r requirements-build.lock \
    && pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY litellm_scim/ litellm_scim/
COPY scim_common/ scim_common/
COPY scim_contract/ scim_contract/
COPY scim_endpoint/ scim_endpoint/
COPY scim_operator/ scim_operator/
# The project itself: built with the locked setuptools, installed without resolving anything. The
# installer and the build backend have done their work and stay out of the image.
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
    && pip install --no-deps --no-index /tmp/dist/litellm_scim_operator-*.whl \
    && pip check \
    && pip uninstall --yes setuptools \
    && python3 -m pip uninstall --yes pip

# --- final: the interpreter and the virtualenv only (no compilers, no pip cache, no sources) -----
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="litellm-scim-operator" \
      org.opencontainers.image.description="SCIM 2.0 endpoint and Kubernetes operator provisioning identity-provider users and groups into LiteLLM" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# Nothing is downloaded here: the virtualenv comes from the builder (same base image, so its
# interpreter links resolve), and this stage only adds the unprivileged user.
COPY --from=builder /opt/venv /opt/venv
RUN groupadd --system --gid 10001 scim \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin scim
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["litellm-scim"]
CMD ["--help"]
