#!/usr/bin/env bash
# collect_whole.sh SECONDS MARKER: wait up to SECONDS for MARKER in whole1886.sh's log (or for its launch's
# failure), then bring back the report so far, the driver's console and the runs' consoles and logs as all.tar.xz.
# The call's wait must end ~45 s before the call's limit (the report takes up to 25 s): a call killed at its limit
# brings nothing back.
end=$((SECONDS + $1))
while [ $SECONDS -lt $end ] && ! grep -q "$2\|launched rc [1-9]" /tmp/g/out/driver.txt 2>/dev/null; do sleep 10; done
cd "$(dirname "$0")/../../../.."
PYTHONPATH=/tmp/site timeout 25 python3 scripts/bench_vs_reference.py report --workdir /tmp/g/whole \
  > /tmp/g/out/whole_report.txt 2>&1
cp /tmp/g/driver_console.txt /tmp/g/out/ 2>/dev/null  # the driver's own errors (data, wheels, the shipped file)
cat /tmp/g/out/driver.txt /tmp/g/out/whole_report.txt; tail -5 /tmp/g/out/driver_console.txt 2>/dev/null
mkdir -p /tmp/g/out/whole  # each run's console, logs and the plan: the small text files, not the weights
(cd /tmp/g/whole 2>/dev/null && find . -maxdepth 3 -type f -size -4M \( -name '*.txt' -o -name '*.json' \) \
  | xargs -r cp --parents -t /tmp/g/out/whole)
tar -cJf $OUT/all.tar.xz -C /tmp/g out
ls -la $OUT
