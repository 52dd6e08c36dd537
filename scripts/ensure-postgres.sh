#!/usr/bin/env bash
# Make sure a PostgreSQL server binary is on this machine for the tests, which start their own
# throwaway server on a free loopback port. Installs Debian's postgresql when none is found.
set -euo pipefail
if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-postgres: no pg_ctl found; installing Debian's postgresql" >&2
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq </dev/null
$SUDO apt-get install -y -qq postgresql </dev/null
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null
