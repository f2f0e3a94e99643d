// Package kernel binds Linux's own general notification queue
// (kernel/watch_queue.c, fs/pipe.c) and key watches
// (security/keys/keyctl.c:keyctl_watch_key) for Go programs.
//
// A [Pipe] is a notification pipe: pipe2(2) with O_NOTIFICATION_PIPE, sized
// with IOC_WATCH_QUEUE_SET_SIZE and filtered with IOC_WATCH_QUEUE_SET_FILTER.
// [Pipe.WatchKey] places a KEYCTL_WATCH_KEY watch on it and [Pipe.Read]
// returns whole records exactly as read(2) packs them, using the runtime
// poller so a blocked read does not hold an OS thread.
//
// [Probe] tells whether the running kernel has the facility and, if not,
// why: every such error matches [ErrNotSupported] under errors.Is and wraps
// the errno the kernel gave (ENOPKG without CONFIG_WATCH_QUEUE, EOPNOTSUPP
// without CONFIG_KEY_NOTIFICATIONS, EINVAL before Linux 5.8, ENOSYS without
// CONFIG_KEYS).
//
// The package does not depend on the watchq engine: it deals in bytes. Parse
// what Read returns with package record (github.com/watchq/watchq/record).
package kernel
