# syntax=docker/dockerfile:1
# One image, both processes: `litellm-scim endpoint` and `litellm-scim operator`.
#   docker build -t litellm-scim-operator:0.1.0 .
# Kubernetes probes check health (see the Helm chart), so there is no HEALTHCHECK here.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the project wheel plus the wheels of its pinned dependencies -----------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY litellm_scim/ litellm_scim/
COPY scim_common/ scim_common/
COPY scim_contract/ scim_contract/
COPY scim_endpoint/ scim_endpoint/
COPY scim_operator/ scim_operator/
RUN pip wheel --wheel-dir /wheels .

# --- final: the interpreter and installed wheels only (no compilers, no pip cache, no sources) ---
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="litellm-scim-operator" \
      org.opencontainers.image.description="SCIM 2.0 endpoint and Kubernetes operator provisioning identity-provider users and groups into LiteLLM" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/litellm_scim_operator-*.whl \
    && groupadd --system --gid 10001 scim \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin scim
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["litellm-scim"]
CMD ["--help"]
