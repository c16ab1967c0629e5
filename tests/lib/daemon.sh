# Sourced by the shell tests: start `vllmd serve` on a port the kernel picks
# (--port 0; the daemon logs "on http://HOST:PORT"), so that no test depends
# on a fixed or pre-probed port, and wait for it as long as a slow or
# sanitized build needs, giving up at once when the daemon exits.
#
#   daemon_start LOG vllmd-args...   sets $daemon_pid and $daemon_port; 1 on failure
#   daemon_stop                      SIGTERM, then wait
daemon_start() {
	local log=$1 i
	shift
	"$@" --port 0 >"$log" 2>&1 &
	daemon_pid=$!
	daemon_port=
	for i in $(seq 1200); do # up to 120 s
		daemon_port=$(sed -n 's|.* on http://[^ ]*:\([0-9][0-9]*\)$|\1|p' "$log" | head -1)
		if [ -n "$daemon_port" ] &&
			/usr/bin/python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$daemon_port/health', timeout=5)" 2>/dev/null; then
			return 0
		fi
		kill -0 "$daemon_pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

daemon_stop() {
	[ -n "${daemon_pid:-}" ] || return 0
	kill -TERM "$daemon_pid" 2>/dev/null
	wait "$daemon_pid" 2>/dev/null
	daemon_pid=
}
