# QuantMesh image: multi-stage, slim, non-root.
#
#   docker build -t quantmesh .
#   docker run -v ./config.yaml:/etc/quantmesh/config.yaml:ro -v qm-data:/var/lib/quantmesh quantmesh
#
# Settings are read from /etc/quantmesh/config.yaml; state (SQLite database, write-buffer
# journal, simulator state) lives in the /var/lib/quantmesh volume.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/quantmesh
COPY pyproject.toml README.md ./
COPY quantmesh ./quantmesh
RUN /opt/quantmesh/bin/pip install --no-compile . \
    && /opt/quantmesh/bin/python -m compileall -q /opt/quantmesh/lib

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="quantmesh" \
      org.opencontainers.image.description="Asyncio grid-trading daemon"
RUN groupadd --system --gid 10001 quantmesh \
    && useradd --system --uid 10001 --gid quantmesh --home-dir /var/lib/quantmesh \
       --shell /usr/sbin/nologin quantmesh \
    && install -d -o quantmesh -g quantmesh -m 0750 /var/lib/quantmesh \
    && install -d -m 0755 /etc/quantmesh
COPY --from=build /opt/quantmesh /opt/quantmesh
COPY config/config.yaml /etc/quantmesh/config.yaml
ENV PATH=/opt/quantmesh/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/quantmesh
VOLUME ["/var/lib/quantmesh"]
EXPOSE 9321
# /healthz needs no token and answers while the daemon starts; readiness is /readyz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9321/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["quantmesh"]
CMD ["run", "--config", "/etc/quantmesh/config.yaml"]
