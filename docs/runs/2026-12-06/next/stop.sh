#!/usr/bin/env bash
# stop.sh: stop s27.sh and its runs, started as `setsid nohup bash .../s27.sh`: setsid makes s27.sh's shell the
# leader of a process group that holds ab_runs and its training runs. TERM first (ab_runs marks a run it stops as
# cut short), then KILL what is left after 30 s. Not `pkill -f s27.sh`: when the calling command names s27.sh too,
# as a call that starts s27.sh and stops it later does, that pattern kills the call's own shell (2026-12-07).
pid=$(cat /tmp/g/s27.pid 2>/dev/null) || { echo "no /tmp/g/s27.pid: s27.sh did not start on this machine"; exit 0; }
kill -TERM -- "-$pid" 2>/dev/null || { echo "s27.sh (process group $pid) had ended"; exit 0; }
for _ in $(seq 30); do pgrep -g "$pid" > /dev/null || break; sleep 1; done
pkill -KILL -g "$pid" 2>/dev/null
echo "s27.sh (process group $pid) stopped"
