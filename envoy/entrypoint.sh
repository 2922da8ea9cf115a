#!/bin/sh
# Container entry point of the edge: render the config from the environment, run Envoy.
set -e
python envoy/render.py > /tmp/envoy.json
exec envoy -c /tmp/envoy.json --log-level "${ENVOY_LOG_LEVEL:-warn}" --disable-hot-restart
