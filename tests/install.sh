#!/usr/bin/env bash
# make install puts every file where the documentation says, and make
# uninstall takes them away again; the systemd unit passes systemd's checks.
. "$(dirname "$0")/lib.sh"
[ -x "$CHATSYNCD" ] || skip_all "src/chatsyncd not built"

DEST="$TEST_TMP/root"
prefix=$(sed -n 's/^prefix = //p' "$top_builddir/Makefile")
sysconfdir=$(sed -n 's/^sysconfdir = //p' "$top_builddir/Makefile" | sed "s|\${prefix}|$prefix|")
unitdir=$(sed -n 's/^systemdsystemunitdir = //p' "$top_builddir/Makefile" | sed "s|\${prefix}|$prefix|")

make -s -C "$top_builddir" install DESTDIR="$DEST" >"$TEST_TMP/install.log" 2>&1
is "$?" 0 "make install DESTDIR=... succeeds"
for f in "$prefix/sbin/chatsyncd" "$sysconfdir/chatsyncd.conf" \
	"$prefix/share/chatsync/chatsyncd.conf" "$prefix/share/chatsync/sql/001_initial.sql" \
	"$unitdir/chatsyncd.service" "$prefix/share/man/man8/chatsyncd.8" \
	"$prefix/share/man/man5/chatsyncd.conf.5" "$prefix/share/man/man7/chatsync.7" \
	"$prefix/share/chatsync/questions.sql" "$prefix/share/doc/chatsync/LICENSE" \
	"$prefix/share/doc/chatsync/NEWS" "$prefix/share/doc/chatsync/README.md"; do
	[ -f "$DEST$f" ]
	ok $? "installs $f"
done
[ -x "$DEST$prefix/sbin/chatsyncd" ]
ok $? "the daemon is executable"
grep -q '^MIT License$' "$DEST$prefix/share/doc/chatsync/LICENSE"
ok $? "the licence is MIT"
is "$(stat -c %a "$DEST$sysconfdir/chatsyncd.conf")" 644 \
	"the configuration is installed with mode 644, readable by the unit's dynamic user"
grep -q 'with mode 644' "$DEST$prefix/share/man/man5/chatsyncd.conf.5" &&
	grep -q 'with mode 644' "$DEST$prefix/share/man/man8/chatsyncd.8" &&
	! grep -q 'with mode 600' "$DEST$prefix/share/man/man5/chatsyncd.conf.5" "$DEST$prefix/share/man/man8/chatsyncd.8"
ok $? "both man pages say so"
is "$("$DEST$prefix/sbin/chatsyncd" --version)" "$("$CHATSYNCD" --version)" "the installed daemon runs"

unit="$DEST$unitdir/chatsyncd.service"
grep -q '@[a-z]*@' "$unit" "$DEST$prefix/share/man/man8/chatsyncd.8" 2>/dev/null
ok $((!$?)) "no @placeholder@ is left in the unit or the man page"
grep -q "^ExecStart=$prefix/sbin/chatsyncd -c $sysconfdir/chatsyncd.conf$" "$unit"
ok $? "the unit starts the installed daemon with the installed configuration"
for directive in Type=notify 'ExecReload=/bin/kill -HUP $MAINPID' Restart=on-failure NoNewPrivileges=yes \
	ProtectSystem=strict ProtectHome=yes PrivateTmp=yes DynamicUser=yes RestartPreventExitStatus=1 \
	MemoryMax=256M TasksMax=256 SocketBindAllow=tcp:19187 SocketBindDeny=any PrivateMounts=yes \
	"LoadCredential=twilio-auth-token:$sysconfdir/chatsync/twilio-auth-token"; do
	grep -qxF "$directive" "$unit"
	ok $? "the unit has $directive"
done
if command -v systemd-analyze >/dev/null; then
	# Point the unit's paths into DESTDIR so that systemd can check them.
	sed "s|$prefix|$DEST$prefix|g" "$unit" >"$TEST_TMP/chatsyncd.service"
	out=$(systemd-analyze --man=no verify "$TEST_TMP/chatsyncd.service" 2>&1)
	is "$?|$out" "0|" "systemd-analyze verify finds nothing to say about the unit"
	# The exposure score README records is a ceiling: hardening may only lower it.
	recorded=$(sed -n 's/.*systemd-analyze security --offline=yes` rates the unit \([0-9.]*\).*/\1/p' \
		"$top_srcdir/README.md")
	score=$(systemd-analyze security --offline=yes "$TEST_TMP/chatsyncd.service" 2>/dev/null |
		sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
	[ -n "$recorded" ] && [ -n "$score" ] && awk -v s="$score" -v r="$recorded" 'BEGIN { exit !(s <= r) }'
	ok $? "systemd-analyze security rates the unit $score, no more than the $recorded README records"
else
	ok 0 "# SKIP systemd-analyze not installed"
	ok 0 "# SKIP systemd-analyze not installed"
fi

TWILIO_AUTH_TOKEN=x "$DEST$prefix/sbin/chatsyncd" -c "$DEST$sysconfdir/chatsyncd.conf" --check-config \
	2>"$TEST_TMP/sample.err"
is "$?" 1 "the installed sample is refused until its placeholder SIDs are replaced"
grep -qE "chatsyncd.conf:[0-9]+: (twilio.account_sid|sync.services\[0\]): .*SID" "$TEST_TMP/sample.err"
ok $? "naming the line of a placeholder SID to edit"
sed -i 's/ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/AC0123456789abcdef0123456789abcdef/; s/ISxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/IS0123456789abcdef0123456789abcdef/; s/USxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/US0123456789abcdef0123456789abcdef/' \
	"$DEST$sysconfdir/chatsyncd.conf"
TWILIO_AUTH_TOKEN=x "$DEST$prefix/sbin/chatsyncd" -c "$DEST$sysconfdir/chatsyncd.conf" --check-config >/dev/null
is "$?" 0 "with real SIDs the installed sample is a valid configuration"

# The sample shows the optional groups commented out; uncommented, they are valid too.
sed -E 's/^# ?(limits: \{|metrics: \{|  [a-z_]+ = |\};)/\1/; s/^  # ([a-z_]+ = )/  \1/' \
	"$DEST$sysconfdir/chatsyncd.conf" >"$TEST_TMP/uncommented.conf"
for key in 'limits: {' 'metrics: {' 'max_rps = ' 'proxy = ' 'max_body = '; do
	grep -q "^ *$key" "$TEST_TMP/uncommented.conf"
	ok $? "the sample shows $key"
done
TWILIO_AUTH_TOKEN=x "$DEST$prefix/sbin/chatsyncd" -c "$TEST_TMP/uncommented.conf" --check-config >/dev/null
is "$?" 0 "the sample with its optional groups uncommented is valid"
sample_port=$(sed -n 's/^ *listen = "127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$TEST_TMP/uncommented.conf")
is "SocketBindAllow=tcp:$sample_port" "$(grep '^SocketBindAllow=' "$unit")" \
	"the sample's metrics port is the one the unit may bind"
[ -n "$sample_port" ] && [ "$sample_port" != 9187 ] && [ "$sample_port" -lt 9100 -o "$sample_port" -gt 9999 ]
ok $? "and lies outside 9100-9999, all allocated to other Prometheus exporters (9187: postgres_exporter)"

echo "# edited" >>"$DEST$sysconfdir/chatsyncd.conf"
make -s -C "$top_builddir" install DESTDIR="$DEST" >/dev/null 2>&1
grep -q '^# edited$' "$DEST$sysconfdir/chatsyncd.conf"
ok $? "installing again keeps an edited configuration"
make -s -C "$top_builddir" uninstall DESTDIR="$DEST" >/dev/null 2>&1
is "$?" 0 "make uninstall succeeds"
left=$(find "$DEST" -type f | sed "s|$DEST||" | sort | tr '\n' ' ')
is "$left" "$sysconfdir/chatsyncd.conf " "uninstall removes every file but the edited configuration"

done_testing
