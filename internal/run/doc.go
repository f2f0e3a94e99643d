// Package run is watchq run: it runs a program written for the kernel's
// notification pipes — pipe2(O_NOTIFICATION_PIPE),
// IOC_WATCH_QUEUE_SET_SIZE, IOC_WATCH_QUEUE_SET_FILTER,
// keyctl(KEYCTL_WATCH_KEY), read() — unmodified on a kernel without
// CONFIG_WATCH_QUEUE, by serving exactly those calls itself.
//
// A helper process (MaybeHelper) sets no_new_privs, installs two seccomp
// filters with user-notification listeners on its one locked thread and
// executes the program, so the program and everything it starts carry the
// filters. The filters trap only pipe2 with O_NOTIFICATION_PIPE, the
// watch-queue ioctls, FIONREAD, watchq's device-watch ioctl and
// keyctl(KEYCTL_WATCH_KEY), in every ABI the kernel runs; every other call
// runs at full speed. The supervisor serves each notification pipe as a
// file of its own FUSE file system with the kernel's read(), write(),
// poll(), close and end-of-file semantics, installs the files into the
// program with SECCOMP_IOCTL_NOTIF_ADDFD, feeds each queue from the
// engine (package watchq) and watches keys through package source/keys,
// resolving key ids inside the calling thread.
//
// On a kernel that has the facility, Passthrough reports so and the CLI
// executes the program as it is. docs/run.md describes the design, its
// costs and what differs from the kernel.
package run
