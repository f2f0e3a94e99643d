// Package keys is watchq's keyring source: it watches Linux keys and
// keyrings and posts key records (struct key_notification, subtypes
// INSTANTIATED..SETATTR) into engine watch lists, one [watchq.WatchList] per
// watched key, so every engine queue watching a key gets its own copy with
// its own tag, filter and policy.
//
// Three backends, chosen when the [Source] is opened:
//
//   - [Kernel] uses the kernel's own facility (CONFIG_KEY_NOTIFICATIONS): one
//     notification pipe per Source holds one KEYCTL_WATCH_KEY watch per
//     watched key, and a relay goroutine reposts every kernel record into
//     the key's watch list. Kernel loss becomes loss on every list; a kernel
//     removal record (the key was garbage-collected) destroys the list.
//   - [Traced] works on kernels without it but with BPF, run by root (or
//     by watchqd for other users, [Source.WatchAs]): BPF programs on the
//     keyctl, add_key and request_key syscall tracepoints report every
//     process's successful key calls, which become the records the kernel
//     would post, at the change, never merged; a poll covers what system
//     calls do not show (garbage collection, the kernel's own changes).
//   - [Poll] works on kernels without either: every interval it diffs what
//     /proc/keys and KEYCTL_READ say about each watched key. It reports
//     most changes, coalesces changes within one interval and cannot see
//     some; docs/keys.md has the table.
//
// Watching happens under the caller's own credentials, as in
// security/keys/keyctl.c:keyctl_watch_key: a key the process may not View
// cannot be watched (EACCES), and no backend tells the process anything
// about it. [Source.WatchAs] makes the same check in another process's
// context (its uid, gid and groups), for watchqd; possession cannot be
// evaluated there, so a key viewable only as its possessor is refused. The engine's policy is asked as well, with the key's owner and
// View bits as the watched [watchq.Object].
//
// The kernel does not say who caused a key change, so records are posted
// with [Config.Generator], by default [watchq.SystemCred] (the kernel's
// init_cred, as for device records).
package keys
