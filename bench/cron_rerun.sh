#!/usr/bin/env bash
# The obvious alternative to rerund, as a user would script it with the flyte CLI and run it
# from cron: list the failed runs, rerun each one not handled yet, remember it in a file.
#
# usage: cron_rerun.sh FLYTE_CONFIG DONE_FILE [timestamped|deterministic]
#   timestamped    (default) the rerun is named <run>-<unix time>, so a rerun next week does
#                  not collide with this one: what a first script does. After a crash between
#                  `flyte rerun` and the write to DONE_FILE, the restart reruns that run again.
#   deterministic  the rerun is named <run>-retry; "already exists" counts as done.
# FLYTE (default: flyte) is the CLI to call.
set -uo pipefail
config=$1
done_file=$2
naming=${3:-timestamped}
flyte=${FLYTE:-flyte}
export COLUMNS=100000 NO_COLOR=1 TERM=dumb
touch "$done_file"

"$flyte" --config "$config" -of json-raw get run --in-phase failed --limit 1000 |
  jq -r '.[].action.id.run.name' |
  while read -r run; do
    grep -qxF "$run" "$done_file" && continue
    if [ "$naming" = deterministic ]; then
      name="$run-retry"
    else
      name="${run:0:16}-$(date +%s)"
    fi
    if out=$("$flyte" --config "$config" rerun "$run" --name "$name" 2>&1); then
      echo "$run" >>"$done_file"
    elif [ "$naming" = deterministic ] && grep -q "already exists" <<<"$out"; then
      echo "$run" >>"$done_file"
    else
      echo "rerun of $run failed: $out" >&2
    fi
  done
