# One image for the bridge, the watchdog, the simulator and the compose stack's init.
#
# Built from pinned versions, so a rebuild runs what the tests ran:
# - Python: an exact tag, the Python release and the Debian release. Not a digest: the
#   image behind this tag is rebuilt only for Debian's security fixes, which a rebuild
#   should take. To freeze it bit for bit too, build with the digest that
#   `docker buildx imagetools inspect python:3.11.13-slim-bookworm` prints:
#   docker compose build --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>
# - Python packages: the versions constraints.txt locks (scripts/lock refreshes it), which
#   scripts/bootstrap installs for the tests too. setup.cfg's ranges stay the contract.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# Build stage: the dependencies, then the project, into a virtualenv.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, from setup.cfg and the lock alone, in a layer of their own: a change
# to the code reuses it instead of downloading and installing them all again.
COPY setup.cfg constraints.txt ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); \
print(c['options']['install_requires'])" > requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt -c constraints.txt
COPY pyproject.toml README.md ./
COPY bridge bridge
COPY watchdog watchdog
COPY simulator simulator
COPY iotcommon iotcommon
COPY mosquitto mosquitto
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps .

# Runtime stage: the virtualenv, the SQL, broker and init files, a non-root user.
FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin iot \
    && install -d -o iot -g iot /results
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY schema.sql ./
COPY mosquitto mosquitto
# The compose stack's one-shots init and broker-sync (secrets, broker accounts); they import
# mosquitto.dynsec, installed with the project above.
COPY deploy/compose deploy/compose
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER iot
# /app (the code) is root's; /results is the user's, for `python -m simulator --json`
# (the compose file mounts a volume there, which takes this owner when created).
# The bridge's health: a fresh heartbeat and a live broker connection
# (python -m bridge health). The watchdog service overrides it in compose.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bridge", "health"]
CMD ["python", "-m", "bridge"]
