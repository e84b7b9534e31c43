/*
 * twilio.c - Twilio's vocabulary: SIDs, membership statuses, APIs, error bodies
 */
#include "config.h"

#include "twilio.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#define SID_LENGTH 34

static const char *const known_statuses[] = {"joined", "invited", "not_participating"};

bool
twilio_sid_valid(const char *s, const char *prefix)
{
	if (s == NULL || strlen(s) != SID_LENGTH || s[0] != prefix[0] || s[1] != prefix[1])
		return false;
	for (size_t i = 2; i < SID_LENGTH; i++) {
		if (!isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

/* Reads n digits at s into *v; false if any is not a digit. */
static bool
digits(const char *s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		*v = *v * 10 + (s[i] - '0');
	}
	return true;
}

bool
twilio_date_valid(const char *s)
{
	int year, month, day, hour, minute, second, oh, om;
	const char *z;

	if (s == NULL || strlen(s) < 20 || !digits(s, 4, &year) || s[4] != '-' ||
	    !digits(s + 5, 2, &month) || s[7] != '-' || !digits(s + 8, 2, &day) || s[10] != 'T' ||
	    !digits(s + 11, 2, &hour) || s[13] != ':' || !digits(s + 14, 2, &minute) ||
	    s[16] != ':' || !digits(s + 17, 2, &second))
		return false;
	if (year < 1 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 ||
	    minute > 59 || second > 60)
		return false;
	z = s + 19;
	if (*z == '.') {
		do
			z++;
		while (isdigit((unsigned char)*z));
		if (!isdigit((unsigned char)z[-1]))
			return false;
	}
	if (strcmp(z, "Z") == 0)
		return true;
	return (z[0] == '+' || z[0] == '-') && digits(z + 1, 2, &oh) && z[3] == ':' &&
	       digits(z + 4, 2, &om) && z[6] == '\0' && oh < 24 && om < 60;
}

bool
twilio_status_known(const char *status)
{
	for (size_t i = 0; i < sizeof(known_statuses) / sizeof(known_statuses[0]); i++) {
		if (strcmp(status, known_statuses[i]) == 0)
			return true;
	}
	return false;
}

const char *
twilio_status_normalize(const char *status)
{
	if (status != NULL && strcmp(status, "notParticipating") == 0)
		return "not_participating";
	return status;
}

/*
 * The specs' bounds: twilio_ip_messaging_v1.json, twilio_chat_v2.json and
 * twilio_conversations_v1.json.
 */
static const struct twilio_api_info apis[] = {
	[TWILIO_API_IP_MESSAGING_V1] = {"ip_messaging_v1", "https://ip-messaging.twilio.com", "v1",
					1000, 1000, "Channels", false, true},
	[TWILIO_API_CHAT_V2] = {"chat_v2", "https://chat.twilio.com", "v2", 50, 100, "Channels",
				false, true},
	[TWILIO_API_CONVERSATIONS] = {"conversations", "https://conversations.twilio.com", "v1", 50,
				      50, "Conversations", true, false},
};

const struct twilio_api_info *
twilio_api_info(enum twilio_api api)
{
	return &apis[api];
}

bool
twilio_api_parse(const char *name, enum twilio_api *api)
{
	for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++) {
		if (strcmp(name, apis[i].name) == 0) {
			*api = (enum twilio_api)i;
			return true;
		}
	}
	return false;
}

void
twilio_printable(char *out, size_t outsz, const char *s)
{
	size_t o = 0;

	for (; *s != '\0' && o + 1 < outsz; s++)
		out[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
	out[o] = '\0';
}

void
twilio_describe_error(long status, const char *body, long *code, char *out, size_t outsz)
{
	static const char *code_path[] = {"code", NULL};
	static const char *message_path[] = {"message", NULL};
	char message[200] = "";
	yajl_val tree, v;

	*code = 0;
	tree = yajl_tree_parse(body, NULL, 0);
	if (tree != NULL) {
		v = yajl_tree_get(tree, code_path, yajl_t_number);
		if (v != NULL && YAJL_IS_INTEGER(v))
			*code = (long)YAJL_GET_INTEGER(v);
		v = yajl_tree_get(tree, message_path, yajl_t_string);
		if (v != NULL)
			twilio_printable(message, sizeof(message), YAJL_GET_STRING(v));
		yajl_tree_free(tree);
	}
	if (*code != 0)
		snprintf(out, outsz, "HTTP %ld (Twilio error %ld: %s)", status, *code, message);
	else
		snprintf(out, outsz, "HTTP %ld", status);
}
