# One image for the bridge, the watchdog and the simulator (different commands).
# Build stage: install the project and its dependencies into a virtualenv.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY bridge bridge
COPY watchdog watchdog
COPY simulator simulator
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check .

# Runtime stage: the virtualenv, the SQL, broker and init files, a non-root user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin iot
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY schema.sql ./
COPY mosquitto mosquitto
# The compose stack's one-shot init (secrets, broker accounts); it uses mosquitto/dynsec.py.
COPY deploy/compose/stack_init.py deploy/compose/stack_init.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER iot
# The bridge's health: a fresh heartbeat and a live broker connection
# (python -m bridge health). The watchdog service overrides it in compose.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bridge", "health"]
CMD ["python", "-m", "bridge"]
