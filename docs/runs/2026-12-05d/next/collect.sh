#!/usr/bin/env bash
# collect.sh SECONDS MARKER [artifacts] [cache]: wait up to SECONDS for MARKER in the driver's log, then bring back
# what exists: out/ (report, pack, consoles) as all.tar.xz; with "artifacts" the base artifacts (each under the
# 16 MiB a returned file may be); with "cache" the compile caches as cache.tar.xz when they pack under 15 MiB.
# The call's wait must end 90 s before the device time does: a call killed at its limit brings nothing back.
end=$((SECONDS + $1))
while [ $SECONDS -lt $end ] && ! grep -q "$2" /tmp/g/out/driver.txt 2>/dev/null; do sleep 10; done
cd "$(dirname "$0")/../../../.."
PYTHONPATH=/tmp/site timeout 25 python3 scripts/ab_runs.py report --workdir /tmp/g/ab --md /tmp/g/out/ab.md \
  --plot /tmp/g/out/ab.png --pack /tmp/g/out/ab_logs.tar.xz > /tmp/g/out/report_console.txt 2>&1
cat /tmp/g/out/driver.txt; tail -4 /tmp/g/out/ab_console.txt; cat /tmp/g/out/ab.md
for f in /tmp/g/ab/logs/*.txt; do echo "$f: $(tail -1 $f | cut -c1-150)"; done
tar -cJf $OUT/all.tar.xz -C /tmp/g out
case " $* " in *" artifacts "*) cp /tmp/g/ab/artifacts/base_s*.golf $OUT/ 2>/dev/null;; esac
case " $* " in *" cache "*)
  timeout 60 tar -c -C /tmp/g/ab cache | timeout 60 xz -T0 -6 > /tmp/g/cache.tar.xz
  size=$(stat -c %s /tmp/g/cache.tar.xz); echo "cache.tar.xz $size bytes"
  [ "$size" -lt 15728640 ] && cp /tmp/g/cache.tar.xz $OUT/;;
esac
ls -la $OUT
