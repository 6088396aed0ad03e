#!/bin/sh
# conflux-entrypoint: a container's entrypoint that renders the config files once and
# then becomes the service, so that the service never starts on a missing or unchecked
# config (the image of packaging/Dockerfile installs it as /usr/bin/conflux-entrypoint):
#
#   ENTRYPOINT ["conflux-entrypoint"]
#   CMD ["nginx", "-g", "daemon off;"]
#
# 1. `conflux --onetime` applies every resource (render, check, swap; a reload finds no
#    service running yet). If any fails (exit 1, or 2 for a configuration error), the
#    container exits with that code and the service is not started: the orchestrator's
#    restart policy tries again.
# 2. `exec "$@"`: the service replaces this shell (it is PID 1, signals reach it).
#
# With CONFLUX_ENTRYPOINT_WATCH=1, `conflux --watch` also runs beside the service (in
# the background, started before the exec), re-rendering and reloading it as keys
# change; it logs to the container's stderr, and nothing restarts it if it dies.
# Without a command, the container is conflux itself: `exec conflux --watch`.
#
# conflux's settings come from CONFLUX_* variables (CONFLUX_NODES, CONFLUX_BACKEND,
# CONFLUX_CONFDIR, ...) or /etc/conflux/conflux.toml, as anywhere else.
set -eu

if [ "$#" -eq 0 ]; then
	exec conflux --watch
fi

conflux --onetime

if [ "${CONFLUX_ENTRYPOINT_WATCH:-0}" = 1 ]; then
	conflux --watch &
fi

exec "$@"
