#!/usr/bin/env bash
# dev.sh - build chatsync from a fresh clone and run the demo or the tests.
#
#   ./dev.sh demo      build, then sync the bundled fake Twilio API into a throwaway PostgreSQL
#   ./dev.sh test      build, then run the whole test suite (make check)
#   ./dev.sh sanitize  the test suite again, built with AddressSanitizer and
#                      UndefinedBehaviorSanitizer in a scratch copy of the tree;
#                      fails on any sanitizer report
#
# Missing Debian packages are installed with apt-get when run as root;
# otherwise the command to install them is printed.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(build-essential autoconf automake libtool pkg-config
	libcurl4-openssl-dev libyajl-dev libpq-dev libconfig-dev libmicrohttpd-dev
	postgresql postgresql-client curl)
# What the tests check with: promtool (package prometheus) for the metrics
# and the alerting rules, jq for the Grafana dashboard, systemd-analyze for
# the unit, script (bsdutils) for a terminal, clang-format for make
# check-format; a test skips, saying why, where one is missing.
TEST_PACKAGES=(prometheus jq systemd bsdutils clang-format)
# Only for sanitize, valgrind and fuzzing.
CHECK_PACKAGES=(clang-14 libclang-rt-14-dev valgrind)

install_packages() {
	local missing=() p
	for p in "$@"; do
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

# Runs the suite built with sanitizers in a copy of the tracked files, so
# the tree in front of the developer keeps its own build.
sanitize() {
	local dir logs reports status
	dir=$(mktemp -d /tmp/chatsync-sanitize.XXXXXX)
	logs=$dir/sanitizer-logs
	git ls-files -z | xargs -0 cp --parents -t "$dir"
	mkdir -p "$logs"
	(
		cd "$dir"
		./autogen.sh >/dev/null 2>&1
		./configure -q --enable-sanitizers
		make -s -j"$(nproc)"
		ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$logs/asan" \
		UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan" \
			make -j"$(nproc)" check 2>&1
	) | tee .check.out
	status=${PIPESTATUS[0]}
	reports=$(ls "$logs")
	if [ -n "$reports" ]; then
		echo "sanitizer reports:"
		cat "$logs"/*
		status=1
	else
		echo "sanitizers: no reports"
	fi
	rm -rf "$dir"
	return "$status"
}

# Prints automake's totals as one "N passed, N failed, N skipped" line.
summarise() {
	awk '/^# (PASS|XFAIL):/ { p += $3 } /^# (FAIL|XPASS|ERROR):/ { f += $3 } /^# SKIP:/ { s += $3 }
	     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$1"
}

case "${1:-}" in
demo)
	install_packages "${PACKAGES[@]}"
	build
	make -s demo
	;;
test)
	install_packages "${PACKAGES[@]}" "${TEST_PACKAGES[@]}"
	build
	set +e
	make -j"$(nproc)" check 2>&1 | tee .check.out
	status=${PIPESTATUS[0]}
	set -e
	summarise .check.out
	rm -f .check.out
	exit $status
	;;
sanitize)
	install_packages "${PACKAGES[@]}" "${TEST_PACKAGES[@]}" "${CHECK_PACKAGES[@]}"
	set +e
	sanitize
	status=$?
	set -e
	summarise .check.out
	rm -f .check.out
	exit $status
	;;
*)
	echo "usage: $0 demo|test|sanitize" >&2
	exit 1
	;;
esac
