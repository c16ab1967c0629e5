#!/usr/bin/env bash
# The chat-template tests under other clocks and time zones (libfaketime):
# the goldens render strftime_now at a fixed instant, and the one test of the
# real clock compares by format, so the date, the zone and the year's end must
# not matter. Skips (77) where faketime is not installed.
set -u
B=${VD_BUILDDIR:-.}
command -v faketime >/dev/null || { echo "faketime not installed: skipped"; exit 77; }
rc=0
for clock in "2027-03-01 12:00:00|UTC" "2030-12-31 23:59:00|Pacific/Kiritimati" \
	"1999-12-31 23:59:59|America/Adak" "2026-06-30 00:00:01|Asia/Kolkata"; do
	at=${clock%|*} tz=${clock#*|}
	# libfaketime is preloaded ahead of the sanitizer runtime in the ASan build
	if ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 TZ=$tz \
		faketime "$at" "$B/tests/test_chat_template" >clock.log 2>&1; then
		echo "ok - test_chat_template at $at in $tz"
	else
		echo "not ok - test_chat_template at $at in $tz"
		tail -20 clock.log
		rc=1
	fi
done
rm -f clock.log
exit $rc
