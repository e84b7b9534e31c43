/*
 * fuzz_settings.c - libFuzzer target for the configuration loader
 *
 * Writes the input to a file and loads it: any input must either load into
 * settings that satisfy every documented bound, or be refused cleanly.
 */
#include "settings.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void
check(const struct settings *s)
{
	if (s->page_size < 1 || s->page_size > 1000 || s->concurrency < 1 || s->concurrency > 64)
		abort();
	if (s->n_services == 0 || s->auth_token == NULL || s->auth_token[0] == '\0')
		abort();
	if (strncmp(s->account_sid, "AC", 2) != 0 || strlen(s->account_sid) != 34)
		abort();
	for (size_t i = 0; i < s->n_services; i++) {
		if (s->services[i].n_users == 0 || strlen(s->services[i].sid) != 34)
			abort();
		for (size_t j = 0; j < s->services[i].n_users; j++) {
			if (s->services[i].users[j][0] == '\0')
				abort();
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct settings *s;
	FILE *f;

	if (path[0] == '\0') {
		snprintf(path, sizeof(path), "/tmp/chatsync-fuzz-settings.%ld.conf",
			 (long)getpid());
		unsetenv("TWILIO_AUTH_TOKEN");
	}
	f = fopen(path, "wb");
	if (f == NULL)
		abort();
	fwrite(data, 1, size, f);
	fclose(f);
	s = settings_load(path, SETTINGS_TOKEN_READ);
	if (s != NULL)
		check(s);
	settings_free(s);
	return 0;
}
