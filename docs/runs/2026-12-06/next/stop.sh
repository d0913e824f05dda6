#!/usr/bin/env bash
# stop.sh: stop s27.sh and its runs. Started as `setsid nohup bash .../s27.sh`, s27.sh's shell leads a process
# group that holds ab_runs and its training runs: TERM to the group first (ab_runs marks a run it stops as cut
# short), then KILL what is left after 30 s. Not `pkill -f s27.sh`: when the calling command names s27.sh too, as
# a call that starts s27.sh and stops it later does, that pattern kills the call's own shell (2026-12-07).
pid=$(cat /tmp/g/s27.pid 2>/dev/null) || { echo "no /tmp/g/s27.pid: s27.sh did not start on this machine"; exit 0; }
rm -f /tmp/g/s27.pid
if ! kill -0 "$pid" 2>/dev/null && ! pgrep -g "$pid" > /dev/null; then echo "s27.sh ($pid) had ended"; exit 0; fi
if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" != "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  echo "s27.sh ($pid) was not started with setsid: stopping it and its children (a run it started may live on)"
  pkill -TERM -P "$pid"; kill -TERM "$pid"; exit 0
fi
kill -TERM -- "-$pid" 2>/dev/null
for _ in $(seq 30); do pgrep -g "$pid" > /dev/null || break; sleep 1; done
pkill -KILL -g "$pid" 2>/dev/null
echo "s27.sh (process group $pid) stopped"
