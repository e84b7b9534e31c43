# tests/services.sh - a throwaway PostgreSQL cluster, for the tests and the demo (sourced by bash).
#
# The cluster lives in one folder with its unix socket, listens on no TCP
# port, and runs without fsync.  PostgreSQL refuses to run as root, so as
# root the server runs as the "postgres" user, which must be able to reach
# the folder.

: "${PG_BINDIR:=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"

as_pg_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cluster_options() {
	echo "-c listen_addresses='' -k $1 -c fsync=off -c full_page_writes=off -c track_functions=pl"
}

# cluster_start DIR: initdb DIR/data and start it; PGHOST etc. then point at it.
cluster_start() {
	local dir=$1
	mkdir -p "$dir"
	if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
	as_pg_user "$PG_BINDIR/initdb" -D "$dir/data" -A trust -N -U postgres --no-instructions \
		>"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
	cluster_restart "$dir" || return 1
	export PGHOST="$dir" PGUSER=postgres PGDATABASE=chatsync
	export PGOPTIONS="-c client_min_messages=warning"
	"$PG_BINDIR/createdb" -h "$dir" -U postgres chatsync
}

cluster_restart() {
	as_pg_user "$PG_BINDIR/pg_ctl" -D "$1/data" -l "$1/server.log" -w -o "$(cluster_options "$1")" \
		start >/dev/null || { cat "$1/server.log" >&2; return 1; }
}

# cluster_stop DIR [MODE]
cluster_stop() {
	[ -f "$1/data/postmaster.pid" ] || return 0
	as_pg_user "$PG_BINDIR/pg_ctl" -D "$1/data" -m "${2:-fast}" -w stop >/dev/null
}

# fake_api_start BINARY DIR NAME ARGS...: starts the fake Twilio API on a free
# loopback port; sets FAKE_URL and FAKE_PID.
fake_api_start() {
	local bin=$1 dir=$2 name=$3 i
	shift 3
	rm -f "$dir/$name.port"
	"$bin" --listen 127.0.0.1:0 --port-file "$dir/$name.port" "$@" >"$dir/$name.out" 2>&1 &
	FAKE_PID=$!
	for i in $(seq 100); do
		[ -s "$dir/$name.port" ] && break
		sleep 0.05
	done
	[ -s "$dir/$name.port" ] || { cat "$dir/$name.out" >&2; return 1; }
	FAKE_URL="http://127.0.0.1:$(cat "$dir/$name.port")"
}
