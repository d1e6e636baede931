#!/bin/sh
# Start of the compose profile `site`'s broker (docker-compose.yml, site-mosquitto), as
# root in the eclipse-mosquitto image: mosquitto/site.conf with this site's name and the
# bridge's password written in, the central broker's accounts, then Mosquitto itself,
# which reads its config as root and then drops to its own user.
set -eu
umask 077
config=/mosquitto/config/mosquitto.conf
# Through the environment, not awk -v, which would take a backslash in the password for an escape.
SITE_BRIDGE_PASSWORD=$(cat /run/secrets/mqtt_site_bridge_password) awk '
    /^remote_password / { print "remote_password " ENVIRON["SITE_BRIDGE_PASSWORD"]; next }
    /^remote_clientid / { print "remote_clientid " ENVIRON["SITE_NAME"]; next }
    { print }
' /site/site.conf > "$config"
# The site's devices log in with the central broker's accounts (and roles): copied at
# every start, with the health check's client options, so a device added there works here.
mkdir -p /mosquitto/dynsec /mosquitto/data
cp /central-dynsec/dynamic-security.json /mosquitto/dynsec/
cp -R /central-dynsec/health /mosquitto/dynsec/
chown -R mosquitto:mosquitto /mosquitto/dynsec /mosquitto/data
exec /usr/sbin/mosquitto -c "$config"
