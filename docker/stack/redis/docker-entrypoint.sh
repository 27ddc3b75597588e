#!/bin/bash
# The official redis image's start: redis-server as the redis user, listening on the container's network
# (Debian's packaged default is 127.0.0.1 only, behind its own config file, which is not used here).
set -euo pipefail
if [ "${1:-}" = redis-server ]; then
    shift
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server --bind 0.0.0.0 --dir /data "$@"
fi
exec "$@"
