#!/usr/bin/env bash
# Join this machine to a seqgen Ray cluster as a worker node (`ray start --address`, Ray 2.60).
#
#   cluster/start-worker.sh 10.0.0.5:6379                       # the head's SEQGEN_NODE_IP:port
#   cluster/start-worker.sh 10.0.0.5:6379 --num-gpus=1 --block  # extra arguments go to `ray start`
#
# Settings (environment variables) [default]:
#   SEQGEN_NODE_IP [the address Ray reaches the head from]  the address this node advertises.
#   RAY_AUTH_MODE [token]   the head's token must be here too: RAY_AUTH_TOKEN, the file
#       RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (copy the head's file, e.g. with scp).
#
# A head bound to loopback (start-head.sh's default) accepts no worker nodes: start it with
# SEQGEN_NODE_IP set to its machine's address. Stop a worker with `ray stop` on its machine.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: start-worker.sh HEAD_IP:PORT [ray start arguments...]" >&2
  exit 2
fi
head="$1"
shift
case "${head%:*}" in
  127.0.0.1 | localhost | "[::1]" | ::1)
    echo "start-worker.sh: the head $head is bound to loopback, which accepts no worker nodes;" \
         "restart it with SEQGEN_NODE_IP=<its machine's address> (cluster/README.md)" >&2
    exit 2 ;;
esac

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
if [[ "$RAY_AUTH_MODE" == token && -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" \
      && ! -s "$HOME/.ray/auth_token" ]]; then
  echo "start-worker.sh: no cluster token: copy the head's ~/.ray/auth_token here" \
       "or set RAY_AUTH_TOKEN_PATH" >&2
  exit 2
fi

node_ip_arg=()
if [[ -n "${SEQGEN_NODE_IP:-}" ]]; then
  node_ip_arg=(--node-ip-address="$SEQGEN_NODE_IP")
fi
exec ray start --address="$head" "${node_ip_arg[@]}" --disable-usage-stats "$@"
