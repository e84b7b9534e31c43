/*
 * notify_listener.c - receives systemd notification datagrams for the tests
 *
 * Usage: notify_listener SOCKET-PATH
 * Binds a unix datagram socket at SOCKET-PATH and prints every message it
 * receives as one line (newlines inside a message become "|"), until
 * SIGTERM.  Stands in for systemd's side of sd_notify.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t done;

static void
on_term(int sig)
{
	(void)sig;
	done = 1;
}

int
main(int argc, char **argv)
{
	struct sockaddr_un addr;
	struct sigaction sa;
	char msg[4096];
	int fd;

	if (argc != 2 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "usage: notify_listener SOCKET-PATH\n");
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, argv[1], strlen(argv[1]));
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	unlink(argv[1]);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		perror("notify_listener");
		return 1;
	}
	while (!done) {
		ssize_t n = recv(fd, msg, sizeof(msg) - 1, 0);

		if (n < 0)
			continue;
		msg[n] = '\0';
		for (char *p = msg; *p != '\0'; p++) {
			if (*p == '\n')
				*p = '|';
		}
		printf("%s\n", msg);
		fflush(stdout);
	}
	unlink(argv[1]);
	return 0;
}
