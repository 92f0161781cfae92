#!/usr/bin/env bash
# Start the head node of a seqgen Ray cluster on this machine (`ray start --head`, Ray 2.60).
#
#   cluster/start-head.sh                               # one machine, every socket on loopback
#   SEQGEN_NODE_IP=10.0.0.5 cluster/start-head.sh       # a head that worker machines can join
#   cluster/start-head.sh --num-cpus=8 --block          # extra arguments go to `ray start`
#
# Settings (environment variables) [default]:
#   SEQGEN_NODE_IP [127.0.0.1]   the address this node advertises. 127.0.0.1 keeps every Ray socket
#       on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); Ray then accepts no other node, not even
#       one on this machine. Any other address: Ray's GCS and raylet listen on all interfaces (Ray
#       cannot narrow them), so firewall the Ray ports to the cluster's own machines.
#   SEQGEN_RAY_PORT [6379]        GCS port that workers join (`start-worker.sh <ip>:<port>`).
#   SEQGEN_DASHBOARD_HOST [127.0.0.1]  dashboard and Jobs API; reach it through an SSH tunnel.
#   SEQGEN_DASHBOARD_PORT [8265]
#   SEQGEN_CLIENT_PORT [10001]    Ray Client server (ray://) port.
#   RAY_AUTH_MODE [token]         token authentication stays on. The token is RAY_AUTH_TOKEN,
#       else the file RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token, which is created here when none
#       of them exists. Every worker node and every client needs the same token.
#
# Stop it with `ray stop` (all Ray processes of this user on this machine), or start it with
# --block and end that process.
set -euo pipefail

node_ip="${SEQGEN_NODE_IP:-127.0.0.1}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"

case "$node_ip" in
  127.0.0.1 | localhost | ::1) export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ;;  # loopback binding
  *) echo "start-head.sh: Ray listens on all interfaces of $node_ip's machine; firewall its ports" >&2 ;;
esac

if [[ "$RAY_AUTH_MODE" == token && -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" \
      && ! -s "$HOME/.ray/auth_token" ]]; then
  ray get-auth-token --generate >/dev/null  # writes ~/.ray/auth_token
  chmod 600 "$HOME/.ray/auth_token"
  echo "start-head.sh: created the cluster token ~/.ray/auth_token; copy it to every node and client" >&2
fi

exec ray start --head \
  --node-ip-address="$node_ip" \
  --port="${SEQGEN_RAY_PORT:-6379}" \
  --dashboard-host="${SEQGEN_DASHBOARD_HOST:-127.0.0.1}" \
  --dashboard-port="${SEQGEN_DASHBOARD_PORT:-8265}" \
  --ray-client-server-port="${SEQGEN_CLIENT_PORT:-10001}" \
  --disable-usage-stats \
  "$@"
