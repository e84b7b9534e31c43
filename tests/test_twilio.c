/*
 * test_twilio.c - Twilio's vocabulary: SIDs, statuses, error bodies
 */
#include "config.h"

#include "twilio.h"

#include "tap.h"

#define CH1 "CH00000000000000000000000000000001"
#define CH4 "CH0123456789ABCDEFabcdef0123456789" /* mixed-case hex */
#define MB1 "MB00000000000000000000000000000001"

static void
test_sid_valid(void)
{
	ok(twilio_sid_valid(CH1, "CH"), "sid: a Channel SID");
	ok(twilio_sid_valid(CH4, "CH"), "sid: mixed-case hex digits");
	ok(twilio_sid_valid("CHABCDEFABCDEFABCDEFABCDEFABCDEFAB", "CH"), "sid: upper case");
	ok(twilio_sid_valid(MB1, "MB"), "sid: another prefix");
	ok(!twilio_sid_valid(MB1, "CH"), "sid: the wrong prefix");
	ok(!twilio_sid_valid("CH0000000000000000000000000000000", "CH"), "sid: 31 hex digits");
	ok(!twilio_sid_valid("CH000000000000000000000000000000000", "CH"), "sid: 33 hex digits");
	ok(!twilio_sid_valid("CH0000000000000000000000000000000g", "CH"), "sid: not hex");
	ok(!twilio_sid_valid("CH000000000000000 000000000000000a", "CH"), "sid: a space inside");
	ok(!twilio_sid_valid("", "CH"), "sid: empty");
	ok(!twilio_sid_valid("CH", "CH"), "sid: the prefix alone");
	ok(!twilio_sid_valid(NULL, "CH"), "sid: NULL");
	ok(!twilio_sid_valid("ch00000000000000000000000000000001", "CH"),
	   "sid: the prefix is case-sensitive");
}

static void
test_statuses(void)
{
	ok(twilio_status_known("joined"), "status: joined");
	ok(twilio_status_known("invited"), "status: invited");
	ok(twilio_status_known("not_participating"), "status: not_participating");
	ok(!twilio_status_known("notParticipating"), "status: v2's spelling is not v1's");
	ok(!twilio_status_known("Joined"), "status: case matters");
	ok(!twilio_status_known(""), "status: empty");
}

static void
test_describe_error(void)
{
	char out[320];
	long code = -1;

	twilio_describe_error(
		404, "{\"code\": 20404, \"message\": \"The requested resource was not found\"}",
		&code, out, sizeof(out));
	is_str(out, "HTTP 404 (Twilio error 20404: The requested resource was not found)",
	       "error: Twilio's error body is described");
	is_int(code, 20404, "error: its code is returned");

	twilio_describe_error(500, "<html>gateway</html>", &code, out, sizeof(out));
	is_str(out, "HTTP 500", "error: a body that is not JSON gives the status alone");
	is_int(code, 0, "error: and no code");

	twilio_describe_error(429, "", &code, out, sizeof(out));
	is_str(out, "HTTP 429", "error: an empty body gives the status alone");

	twilio_describe_error(400, "{\"code\": 21481, \"message\": \"bad\\nline\\u001b[31m\"}",
			      &code, out, sizeof(out));
	is_str(out, "HTTP 400 (Twilio error 21481: bad?line?[31m)",
	       "error: control characters in the message cannot forge log lines");

	twilio_describe_error(403, "{\"code\": \"x\", \"message\": 5}", &code, out, sizeof(out));
	is_str(out, "HTTP 403", "error: fields of the wrong type are ignored");

	twilio_describe_error(404, "{\"code\": 20404, \"message\": \"not found\"}", &code, out, 12);
	is_str(out, "HTTP 404 (T", "error: the description is cut to the buffer");
}

static void
test_printable(void)
{
	char out[8];

	twilio_printable(out, sizeof(out), "a\tb\x7f\xc3\xa9z");
	is_str(out, "a?b???z", "printable: tabs, DEL and bytes past ASCII become '?'");
	twilio_printable(out, sizeof(out), "0123456789");
	is_str(out, "0123456", "printable: cut to the buffer, NUL-terminated");
}

int
main(void)
{
	test_sid_valid();
	test_statuses();
	test_describe_error();
	test_printable();
	return tap_done();
}
