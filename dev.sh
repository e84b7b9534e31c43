#!/usr/bin/env bash
# dev.sh - build chatsync from a fresh clone and run the demo or the tests.
#
#   ./dev.sh demo   build, then sync the bundled fake Twilio API into a throwaway PostgreSQL
#   ./dev.sh test   build, then run the whole test suite (make check)
#
# Missing Debian packages are installed with apt-get when run as root;
# otherwise the command to install them is printed.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(build-essential autoconf automake libtool pkg-config
	libcurl4-openssl-dev libyajl-dev libpq-dev libconfig-dev libmicrohttpd-dev
	postgresql postgresql-client)

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing packages; run: sudo apt-get install ${missing[*]}" >&2
		exit 1
	fi
	echo "== installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
	[ -x configure ] || ./autogen.sh >/dev/null
	[ -f Makefile ] || ./configure -q
	make -s -j"$(nproc)"
}

# Prints automake's totals as one "N passed, N failed, N skipped" line.
summarise() {
	awk '/^# (PASS|XFAIL):/ { p += $3 } /^# (FAIL|XPASS|ERROR):/ { f += $3 } /^# SKIP:/ { s += $3 }
	     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$1"
}

case "${1:-}" in
demo)
	install_packages
	build
	make -s demo
	;;
test)
	install_packages
	build
	set +e
	make -j"$(nproc)" check 2>&1 | tee .check.out
	status=${PIPESTATUS[0]}
	set -e
	summarise .check.out
	rm -f .check.out
	exit $status
	;;
*)
	echo "usage: $0 demo|test" >&2
	exit 1
	;;
esac
