#!/usr/bin/env bash
# Install the servers the scale-out tests start for themselves (distill_tests/scale/conftest.py):
# PostgreSQL and Redis from Debian. Nothing is started here and no system service is enabled:
# each test run makes a throwaway cluster and a redis-server on free ports of 127.0.0.1.
# Needs root (CI runs as root); does nothing when both are already installed.
set -euo pipefail

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }
have_redis() { command -v redis-server >/dev/null; }

if have_postgres && have_redis; then
    echo "ci-services: postgresql and redis-server already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ci-services: installing postgresql and redis-server needs root (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql redis-server >/dev/null
# the packages' own services are not needed (a container's policy may already keep them down)
if command -v service >/dev/null; then
    service redis-server stop >/dev/null 2>&1 || true
    service postgresql stop >/dev/null 2>&1 || true
fi
have_postgres && have_redis
echo "ci-services: installed postgresql and redis-server"
